"""The console API's routes, one module per resource under /api/v1 (and /healthz); each route is 2-3 lines."""

"""EdgeFleet device agent. Depends on `protocols` only, never on `cloud` or `model_compiler`."""

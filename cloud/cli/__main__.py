"""`python -m cloud.cli ...` runs the `edgefleet` command."""

import sys

from cloud.cli import main

sys.exit(main())

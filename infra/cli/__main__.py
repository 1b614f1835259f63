"""`python -m ticker.infra.cli`: the same as the `ticker` console script."""

import sys

from ticker.infra.cli.main import main

sys.exit(main())

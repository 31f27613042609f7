"""`python -m worker.cli`: the same as `hbw`."""

import sys

from worker.cli import main

sys.exit(main())

"""`python -m splitinfer.common.cli`: the `splitinfer` command."""

import sys

from splitinfer.common.cli import main

sys.exit(main())

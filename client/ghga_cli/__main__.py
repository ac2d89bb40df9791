"""``python -m ghga_cli``."""

import sys

from ghga_cli.cli import main

sys.exit(main())

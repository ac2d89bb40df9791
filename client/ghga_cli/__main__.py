"""``python -m ghga_cli``."""

import sys

from ghga_cli.cli.run import main

sys.exit(main())

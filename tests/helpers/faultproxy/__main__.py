"""``python -m tests.helpers.faultproxy``: see :mod:`tests.helpers.faultproxy.cli`."""

import sys

from .cli import main

sys.exit(main())

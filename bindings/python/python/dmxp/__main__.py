"""``python -m dmxp``: see :mod:`dmxp.cli`."""

import sys

from .cli import main

sys.exit(main())

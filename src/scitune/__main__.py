"""``python -m scitune``."""

import sys

from scitune.cli import main

sys.exit(main())

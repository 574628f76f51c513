"""``python -m proxpi_min`` and ``python proxpi.pyz``."""

import sys

from proxpi_min.cli.main import main

sys.exit(main())

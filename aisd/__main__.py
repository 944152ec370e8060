"""``python -m aisd``: the same entry point as the ``aisd`` console script."""

from __future__ import annotations

import sys

from aisd.cli import main

sys.exit(main())

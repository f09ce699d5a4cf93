"""``python -m infinitystar.cli``: the same as the ``infinitystar`` command (what ``torchrun -m`` launches)."""

import sys

from infinitystar.cli import main

sys.exit(main())

"""``python -m vdna``: the same as the ``vdna`` command."""
import sys

from .cli import main

sys.exit(main())

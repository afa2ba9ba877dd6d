"""``python -m scenepriv``: the same command line as ``scenepriv``."""

import sys

from .cli import main

sys.exit(main())

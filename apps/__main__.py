"""``python -m kbnn_apps``: the `kbnn` command."""

import sys

from kbnn_apps.cli import main

sys.exit(main())

"""``python -m session_fsm``: the same as the ``session-fsm`` command."""

import sys

from .cli import main

sys.exit(main())

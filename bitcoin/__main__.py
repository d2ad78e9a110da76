"""``python -m bitcoin``: the offline protocol CLI (see ``bitcoin.cli``)."""

import sys

from bitcoin.cli import main

sys.exit(main())

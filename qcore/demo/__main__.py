"""``python -m qcore.demo``: see `qcore.demo.run`."""

import sys

from qcore.demo.run import main

sys.exit(main())

"""`python -m evsed` is the `evsed` command."""

import sys

from evsed.cli import main

sys.exit(main())

"""`python -m matou.runtime`: the runc-compatible CLI."""

import sys

from matou.runtime.cli import main

sys.exit(main())

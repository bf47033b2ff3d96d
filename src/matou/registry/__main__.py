"""``python -m matou.registry ARGS`` is ``matou registry ARGS``."""

import sys

from matou.registry.cli import main

sys.exit(main(sys.argv[1:]))

import sys

from matou.cli.main import main

sys.exit(main())

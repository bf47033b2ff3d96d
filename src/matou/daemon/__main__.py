import sys

from matou.daemon.main import main

sys.exit(main())

import sys

from dynacppo_lite.cli import main

sys.exit(main())

import sys

from tinyspp.cli import main

sys.exit(main())

import sys

from tinyspp.apps.cli import main

sys.exit(main())

import sys

from qdm.cli import main

sys.exit(main())

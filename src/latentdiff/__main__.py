import sys

from latentdiff.cli import main

sys.exit(main())

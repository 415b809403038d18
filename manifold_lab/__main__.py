import sys

from manifold_lab.cli import main

sys.exit(main())

"""`python -m bench`: the same as `scribe bench`."""

import sys

from bench.runner import main

sys.exit(main())

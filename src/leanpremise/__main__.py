"""`python -m leanpremise` (and `torchrun -m leanpremise train ...`) runs the CLI."""

import sys

from leanpremise.cli import main

if __name__ == "__main__":
    sys.exit(main())

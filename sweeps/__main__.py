"""`python -m sweeps plan|run|status ...` (same as `testbed sweep ...`)."""
import sys

from sweeps.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m geostp`` (what ``torchrun -m geostp run recipe.yaml`` starts in each process)."""

import sys

from geostp.cli import main

if __name__ == "__main__":
    sys.exit(main())

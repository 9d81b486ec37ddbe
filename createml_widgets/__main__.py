"""`python -m createml_widgets train|evaluate|predict TASK ...` (see createml_widgets/cli.py)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())

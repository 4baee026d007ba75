import sys

from .entry import main  # `run` without cli.py's heavy imports (see entry.py)

sys.exit(main())

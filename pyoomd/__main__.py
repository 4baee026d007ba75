import sys

from .cli.entry import main  # `run` without the command line's heavy imports (see cli/entry.py)

sys.exit(main())

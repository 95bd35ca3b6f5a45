"""``python -m reliable_lalm.cli`` is ``rlalm``."""
import sys

from reliable_lalm.cli import main

sys.exit(main())

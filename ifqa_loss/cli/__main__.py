"""``python -m ifqa_loss.cli`` (and ``torchrun ... -m ifqa_loss.cli score ...``)."""

import sys

from . import main

sys.exit(main())

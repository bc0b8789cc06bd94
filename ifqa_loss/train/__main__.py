"""``python -m ifqa_loss.train`` runs ``ifqa train`` (also under torchrun)."""

import sys

from ..cli.train import train_main

if __name__ == "__main__":
    sys.exit(train_main())

"""Validation of a discriminator on held-out faces (same as ``ifqa validate``).

    python benchmarks/validate.py --model ifqa-lite --json runs/validate.json

Reports how often a clean face scores above the same face degraded (Gaussian blur sigma 2,
4x down-up bicubic, noise 15/255, JPEG quality 20, all applied at 512x512) and the Spearman
correlation between degradation strength and score, and whether every degenerate image (flat
colours, gradients, noise, backgrounds, posterised faces) scores below the lowest
clean face; see ``ifqa_loss/train/validation.py``.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ifqa_loss.cli.train import validate_main

if __name__ == "__main__":
    sys.exit(validate_main())

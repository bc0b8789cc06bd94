"""Training new IFQA discriminators: degradations, generator, region swaps, trainer, validation.

Entry points: :func:`ifqa_loss.cli.train.train_main` (``ifqa train``),
:func:`ifqa_loss.cli.train.validate_main` (``ifqa validate``), ``python -m ifqa_loss.train``.
See ``docs/training.md``.
"""

from .config import TrainConfig, load_config

__all__ = ["TrainConfig", "load_config"]

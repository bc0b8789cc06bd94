"""ifqa-loss: IFQA face quality as a differentiable loss and a batched metric.

>>> from ifqa_loss import IFQALoss, IFQAMetric
>>> criterion = IFQALoss()          # lower = more real; minimise it   # doctest: +SKIP
>>> metric = IFQAMetric()           # higher = better                    # doctest: +SKIP
"""

from .loss import FPR_WEIGHTS, IFQALoss
from .masks import face_region_masks
from .metric import IFQAMetric
from .models import create_model, get_model_config, list_models, register_model
from .weights import CheckpointError, convert_checkpoint, find_weights, load_discriminator

__version__ = "0.1.0"

__all__ = [
    "FPR_WEIGHTS",
    "CheckpointError",
    "IFQALoss",
    "IFQAMetric",
    "convert_checkpoint",
    "create_model",
    "face_region_masks",
    "find_weights",
    "get_model_config",
    "list_models",
    "load_discriminator",
    "register_model",
]

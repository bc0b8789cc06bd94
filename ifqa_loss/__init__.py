"""ifqa-loss: IFQA face quality as a differentiable loss and a batched metric.

The loss is something to minimise (lower = more real, or closer to the target); the metric is
higher = better, in [0, 1]. Every module holds its discriminator on the CPU unless given
``device=``, and follows ``.to(device)`` like any ``nn.Module``.

>>> import torch
>>> from ifqa_loss import IFQALoss, IFQAMetric
>>> criterion = IFQALoss(form="features")
>>> metric = IFQAMetric()
>>> x, gt = torch.rand(1, 3, 64, 64), torch.rand(1, 3, 64, 64)
>>> criterion(x, gt).dim(), metric(x).shape
(0, torch.Size([1]))

The public names are loaded on first use (PEP 562), so that ``import ifqa_loss`` and the
``ifqa`` command's ``--help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# public name: the submodule defining it
_EXPORTS = {
    "FPR_WEIGHTS": "regions",
    "IFQAAdversarialLoss": "adversarial",
    "IFQALoss": "loss",
    "adaptive_gan_weight": "balance",
    "face_region_masks": "masks",
    "IFQAMetric": "metric",
    "ModelConfig": "models",
    "create_model": "weights",
    "get_model_config": "models",
    "list_models": "models",
    "register_model": "models",
    "CheckpointError": "weights",
    "convert_checkpoint": "weights",
    "find_weights": "weights",
    "load_discriminator": "weights",
}

__all__ = [
    "FPR_WEIGHTS",
    "CheckpointError",
    "IFQAAdversarialLoss",
    "IFQALoss",
    "IFQAMetric",
    "ModelConfig",
    "adaptive_gan_weight",
    "convert_checkpoint",
    "create_model",
    "face_region_masks",
    "find_weights",
    "get_model_config",
    "list_models",
    "load_discriminator",
    "register_model",
]

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ loads them
    from .adversarial import IFQAAdversarialLoss
    from .balance import adaptive_gan_weight
    from .loss import IFQALoss
    from .masks import face_region_masks
    from .metric import IFQAMetric
    from .models import ModelConfig, get_model_config, list_models, register_model
    from .regions import FPR_WEIGHTS
    from .weights import (
        CheckpointError,
        convert_checkpoint,
        create_model,
        find_weights,
        load_discriminator,
    )


def __getattr__(name: str) -> Any:
    """Load a public name (or a submodule, as ``ifqa_loss.loss``) on first access."""
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    else:
        try:
            value = importlib.import_module(f".{name}", __name__)
        except ModuleNotFoundError as e:
            if e.name != f"{__name__}.{name}":
                raise
            raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))

"""IFQA as pyiqa metrics: ``pyiqa.create_metric("ifqa")``, ``"ifqa++"`` and ``"ifqa-lite"``.

Requires the optional dependency pyiqa >= 0.1.16 (``pip install "ifqa-loss[pyiqa]"``; pyiqa is
under a non-commercial licence, see docs/integrations.md)::

    import pyiqa
    import ifqa_loss.integrations.pyiqa  # noqa: F401  (registers the three metrics)

    iqa = pyiqa.create_metric("ifqa-lite", device="cuda")  # no reference, higher is better
    scores = iqa(images)          # (B, 3, H, W) RGB in [0, 1] -> (B,) in [0, 1]

Importing this module registers, once, into pyiqa's own tables:

- the network ``IFQALossArch`` in ``pyiqa.utils.registry.ARCH_REGISTRY``;
- one entry per model in ``pyiqa.default_model_configs.DEFAULT_CONFIGS`` (no-reference,
  ``lower_better=False``, ``score_range "0, 1"``), which ``create_metric`` and ``list_models``
  read.

Importing it again, or reloading it, adds nothing. A name pyiqa itself already uses is left as
pyiqa has it, with a warning. The package also declares :func:`register` as a ``pyiqa.archs``
entry point, which pyiqa runs when it first searches its arch registry for a name it does not
know (building any network, a YAML ``type: IFQALossArch`` in pyiqa's training included); before
that search ``create_metric("ifqa")`` does not know the names, so import this module first.

The scores are :class:`~ifqa_loss.IFQAMetric`'s (face gate included for the bundled models):
the same discriminator, loaded by this package's loader, run on the same network input. With
``as_loss=True`` gradients reach the input; pyiqa then returns the batch mean of the score,
which is higher for better faces, so minimise ``1 - score``. As a training loss this
no-reference score is gamed (docs/audit.md): ``IFQALoss(form="features")`` is the audited one.

Weights: ``create_metric("ifqa", weights=PATH)`` (or pyiqa's usual
``pretrained_model_path=PATH``) goes to :func:`ifqa_loss.weights.resolve_model`, which never
unpickles code; without either, the usual search applies (docs/metric-and-cli.md#weights) and a
missing checkpoint raises its ``FileNotFoundError``. pyiqa's ``load_weights`` does not apply:
the frozen discriminator is kept out of the module's state dict.
"""

from __future__ import annotations

import inspect
import os
import warnings
from collections.abc import Mapping

import torch
from torch import nn

try:
    from pyiqa.default_model_configs import DEFAULT_CONFIGS
    from pyiqa.utils.registry import ARCH_REGISTRY
except ImportError as e:  # pragma: no cover - depends on the environment
    raise ImportError(
        'ifqa_loss.integrations.pyiqa needs pyiqa: pip install "ifqa-loss[pyiqa]"'
    ) from e

from ..metric import IFQAMetric

if "override" not in inspect.signature(ARCH_REGISTRY.register).parameters:  # pragma: no cover
    raise ImportError(
        "ifqa_loss.integrations.pyiqa needs pyiqa >= 0.1.16 (its registry's override= "
        'argument): pip install -U "ifqa-loss[pyiqa]"'
    )

ARCH_NAME = "IFQALossArch"
MODELS = ("ifqa", "ifqa++", "ifqa-lite")


class IFQALossArch(nn.Module):
    """The network behind the pyiqa metrics: (B, 3, H, W) RGB in [0, 1] -> (B,) IFQA scores.

    Equal to ``IFQAMetric(model, weights, face_gate=face_gate)(x)``; gradients flow to ``x``
    when they are enabled (pyiqa's ``as_loss=True``), never to the frozen networks.

    Args:
        model: ``ifqa``, ``ifqa++``, ``ifqa-lite`` or another registered model.
        weights: checkpoint path or folder for ``model`` (None: search).
        pretrained_model_path: pyiqa's name for ``weights``; give one of the two.
        face_gate: as :class:`~ifqa_loss.IFQAMetric` (``"auto"``: the bundled models only).
    """

    def __init__(
        self,
        model: str = "ifqa-lite",
        weights: str | os.PathLike | None = None,
        pretrained_model_path: str | os.PathLike | None = None,
        face_gate: bool | str | os.PathLike = "auto",
    ) -> None:
        super().__init__()
        if pretrained_model_path is not None:
            if weights is not None:
                raise ValueError("give weights= or pretrained_model_path=, not both")
            weights = pretrained_model_path
        # A child module, so pyiqa's .to(device) moves the discriminator and the gate with it;
        # it keeps them out of parameters() and the state dict.
        self.scorer = IFQAMetric(model, weights, face_gate=face_gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Scores, (B, 1 or 3, H, W) in [0, 1] -> (B,), higher is better.

        Values are checked (NaN/Inf, another convention) when scoring, as the metric does;
        with gradients on, as a loss, only shapes, as pyiqa drops its range check then.
        """
        return self.scorer.scores_with_grad(x)


def _config(model: str) -> dict:
    return {
        "metric_opts": {"type": ARCH_NAME, "model": model},
        "metric_mode": "NR",
        "lower_better": False,
        "score_range": "0, 1",
    }


def _is_ours(cfg: object) -> bool:
    opts = cfg.get("metric_opts") if isinstance(cfg, Mapping) else None
    return isinstance(opts, Mapping) and opts.get("type") == ARCH_NAME


def register() -> list[str]:
    """Register ``IFQALossArch`` and the metrics ``ifqa``, ``ifqa++``, ``ifqa-lite`` in pyiqa.

    Idempotent: the arch is (re)bound to this module's class, a metric entry is added only when
    missing. A name pyiqa already holds for something else is kept, with a ``UserWarning``.

    Returns:
        The metric names this call added (empty when they were all there).
    """
    if ARCH_NAME in ARCH_REGISTRY:
        held = ARCH_REGISTRY.get(ARCH_NAME)
        if getattr(held, "__module__", None) != __name__:
            warnings.warn(
                f"pyiqa already has an arch named {ARCH_NAME!r} ({held!r}); the IFQA metrics "
                "are not registered",
                stacklevel=2,
            )
            return []
    # override: after a reload the registry holds the reloaded class, not a stale one.
    ARCH_REGISTRY.register(IFQALossArch, name=ARCH_NAME, override=True)
    added = []
    for model in MODELS:
        held = DEFAULT_CONFIGS.get(model)
        if held is None:
            DEFAULT_CONFIGS[model] = _config(model)
            added.append(model)
        elif not _is_ours(held):
            warnings.warn(
                f"pyiqa already has a metric named {model!r}; it is kept, and this package's "
                f"IFQA {model!r} is not registered under that name",
                stacklevel=2,
            )
    return added


register()

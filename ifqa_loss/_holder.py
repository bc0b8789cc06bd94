"""Holding a frozen discriminator inside a user's module, and the ``compile`` option."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from .models.base import Discriminator
from .models.registry import ModelConfig


def compile_kwargs(compile: bool | str | Mapping[str, object]) -> dict[str, object] | None:
    """The ``compile`` argument of the loss and the metric as ``torch.compile`` keyword
    arguments: ``True`` -> ``{}``, a mode string -> ``{"mode": ...}``, a dict as is; None: eager."""
    if compile is False or compile is None:
        return None
    if compile is True:
        return {}
    if isinstance(compile, str):
        return {"mode": compile}
    if isinstance(compile, Mapping):
        return dict(compile)
    raise TypeError(
        f"compile must be a bool, a torch.compile mode such as 'reduce-overhead', or a dict of "
        f"torch.compile keyword arguments, got {type(compile).__name__}"
    )


class HoldsDiscriminator(nn.Module):
    """Base of the loss and the metric: keeps the network out of the module tree.

    The frozen discriminator is not a registered submodule, so it never appears in
    ``parameters()`` (an optimizer built over a parent model cannot touch it), nor in
    ``state_dict()`` (a parent's checkpoints do not grow by the discriminator's size). It still
    follows device and dtype moves (``.to(...)``, ``.float()``, ``.half()``) through
    :meth:`_apply`.
    """

    def _hold(self, net: Discriminator, cfg: ModelConfig) -> None:
        self.__dict__["discriminator"] = net
        self.__dict__["config"] = cfg

    discriminator: Discriminator
    config: ModelConfig

    @property
    def model_name(self) -> str:
        """Name of the discriminator in use (``ifqa``, ``ifqa++``, ``ifqa-lite``, ...)."""
        return self.config.name

    @property
    def weights_origin(self) -> str:
        """Where the discriminator's weights were loaded from."""
        return getattr(self.discriminator, "weights_origin", "unknown")

    @property
    def native_size(self) -> int:
        return self.config.native_size

    @property
    def device(self) -> torch.device:
        return next(self.discriminator.parameters()).device

    def _apply(self, fn: Callable, recurse: bool = True):  # type: ignore[override]
        self.discriminator._apply(fn)
        return super()._apply(fn, recurse)

    def extra_repr(self) -> str:
        return f"model={self.model_name!r}, weights={self.weights_origin!r}"

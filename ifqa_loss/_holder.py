"""Choosing a discriminator (``model="auto"``) and holding it frozen inside a user module."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping

import torch
from torch import nn

from .models.base import Discriminator
from .models.registry import ModelConfig, get_model_config, list_models
from .weights import find_weights, load_discriminator, model_of

log = logging.getLogger("ifqa_loss")

WeightsArg = str | os.PathLike | Mapping[str, torch.Tensor] | None
_ANNOUNCED: set[str] = set()


def bundled_model_names() -> list[str]:
    """Bundled models that ``model="auto"`` may fall back to, whose weight file is present."""
    names = []
    for cfg in list_models():
        if cfg.bundled and cfg.auto_fallback:
            try:
                find_weights(cfg.name)
            except FileNotFoundError:
                continue
            names.append(cfg.name)
    return names


def resolve_model(
    model: str | nn.Module, weights: WeightsArg = None, device: str | torch.device | None = None
) -> tuple[Discriminator, ModelConfig]:
    """Turn the ``model``/``weights`` arguments of the loss and metric into a frozen network.

    ``model="auto"``: the original ``ifqa`` weights when they can be found (and ``weights`` is
    None), otherwise the first bundled model; the choice is logged (a warning for the fallback).
    A ``Discriminator`` instance is frozen and used as is, with a config derived from it.
    """
    if isinstance(model, nn.Module):
        if not isinstance(model, Discriminator):
            raise TypeError(
                f"model must be a registered name or an ifqa_loss Discriminator, got "
                f"{type(model).__name__}"
            )
        net = model.freeze()
        if device is not None:
            net.to(device)
        name = getattr(net, "model_name", None)
        try:
            base = get_model_config(name or "")
        except ValueError:
            base = get_model_config("ifqa")  # RGB in [-1, 1], bilinear: the CNN family's input
        cfg = ModelConfig(
            name=name or type(net).__name__,
            builder=base.builder,
            native_size=net.native_size,
            interpolation=base.interpolation,
            weight_file="",
            source="user-supplied module",
            mean=base.mean,
            std=base.std,
        )
        if not hasattr(net, "weights_origin"):
            net.weights_origin = "user-supplied module"
        return net, cfg
    if not isinstance(model, str):
        raise TypeError(f"model must be a string or a Discriminator, got {type(model).__name__}")
    if model == "auto":
        if weights is not None:
            saved_as = model_of(weights) if isinstance(weights, str | os.PathLike) else None
            model = saved_as or "ifqa"
        else:
            try:
                find_weights("ifqa")
                model = "ifqa"
            except FileNotFoundError as e:
                bundled = bundled_model_names()
                if not bundled:
                    raise FileNotFoundError(
                        f"model='auto' found neither the original ifqa weights nor a bundled "
                        f"model.\n{e}"
                    ) from None
                model = bundled[0]
                # Warn once per process; later choices of the same fallback log at INFO.
                level = logging.INFO if model in _ANNOUNCED else logging.WARNING
                _ANNOUNCED.add(model)
                log.log(
                    level,
                    "ifqa_loss: original IFQA weights not found; using the bundled model %r "
                    "(pass model='ifqa' with weights=PATH for the original metric)",
                    model,
                    extra={"auto_fallback": model},  # the CLI says it in its "# model:" line
                )
    cfg = get_model_config(model)
    net = load_discriminator(model, weights=weights, device=device)
    log.info("ifqa_loss: using model %r (weights: %s)", cfg.name, net.weights_origin)
    return net, cfg


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

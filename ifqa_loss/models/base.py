"""What every IFQA discriminator shares: the map/logit interface and freezing."""

from __future__ import annotations

import torch
from torch import nn


class Discriminator(nn.Module):
    """Base class of the per-pixel discriminators.

    A subclass implements :meth:`forward_logits`; ``forward`` returns ``sigmoid`` of it, the
    per-pixel realness map in [0, 1] (higher = more real). Input: ``(B, 3, S, S)`` RGB in
    [-1, 1] at the model's ``native_size`` ``S``.

    :meth:`freeze` turns off every parameter's gradient and pins eval mode: a later
    ``.train()`` (for example from a parent module) leaves the network in eval mode.
    """

    native_size: int = 256

    def __init__(self) -> None:
        super().__init__()
        self._frozen = False

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate feature maps, (B, C_l, H_l, W_l) each, for feature matching."""
        raise NotImplementedError(
            f"{type(self).__name__} does not expose its features; form='features' needs a "
            "discriminator of the ifqa CNN family (ifqa, ifqa-lite)"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))

    @property
    def frozen(self) -> bool:
        return self._frozen

    def freeze(self) -> Discriminator:
        """Disable parameter gradients and pin eval mode (returns ``self``)."""
        for p in self.parameters():
            p.requires_grad_(False)
        self._frozen = True
        super().train(False)
        return self

    def train(self, mode: bool = True) -> Discriminator:
        if self._frozen:
            return super().train(False)
        return super().train(mode)

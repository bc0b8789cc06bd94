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

    Shape:
        - input: :math:`(B, 3, S, S)` in [-1, 1]; the CNNs also take any multiple of 32
        - output: :math:`(B, 1, S, S)` in [0, 1]

    Example:
        The bundled ``ifqa-lite`` (loaded frozen); ``forward`` is the sigmoid of the logits:

        >>> from ifqa_loss import load_discriminator
        >>> d = load_discriminator("ifqa-lite")
        >>> _ = torch.manual_seed(0)
        >>> x = torch.rand(2, 3, 64, 64) * 2 - 1
        >>> realness = d(x)
        >>> realness.shape
        torch.Size([2, 1, 64, 64])
        >>> bool(((realness >= 0) & (realness <= 1)).all())
        True
        >>> torch.allclose(torch.sigmoid(d.forward_logits(x)), realness, atol=1e-6)
        True

        A minimal subclass: ``forward_logits`` is all it needs.

        >>> class Flat(Discriminator):
        ...     def forward_logits(self, x):
        ...         return x.new_zeros(x.shape[0], 1, *x.shape[2:])
        >>> Flat()(x).unique()
        tensor([0.5000])
    """

    native_size: int = 256

    def __init__(self) -> None:
        super().__init__()
        self._frozen = False

    def forward_logits(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def forward_features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Intermediate feature maps, (B, C_l, H_l, W_l) each, for feature matching.

        Raises:
            NotImplementedError: the architecture does not expose its features (only the
                ``ifqa`` CNN family does: :meth:`ifqa_loss.models.IFQACNN.forward_features`).
        """
        raise NotImplementedError(
            f"{type(self).__name__} does not expose its features; form='features' needs a "
            "discriminator of the ifqa CNN family (ifqa, ifqa-lite)"
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.forward_logits(x))

    @property
    def frozen(self) -> bool:
        """Whether :meth:`freeze` was called."""
        return self._frozen

    def freeze(self) -> Discriminator:
        """Disable parameter gradients and pin eval mode (returns ``self``).

        Gradients still flow through a frozen network to its input, which is how the loss
        reaches the restorer.

        Example:
            >>> from ifqa_loss.models import IFQACNN
            >>> d = IFQACNN(width=0.0625, native_size=64).freeze()
            >>> d.frozen, d.training, any(p.requires_grad for p in d.parameters())
            (True, False, False)
            >>> d.train().training       # a parent's .train() keeps it in eval mode
            False
            >>> x = torch.zeros(1, 3, 64, 64, requires_grad=True)
            >>> d(x).mean().backward()
            >>> x.grad.shape
            torch.Size([1, 3, 64, 64])
        """
        for p in self.parameters():
            p.requires_grad_(False)
        self._frozen = True
        super().train(False)
        return self

    def train(self, mode: bool = True) -> Discriminator:
        if self._frozen:
            return super().train(False)
        return super().train(mode)

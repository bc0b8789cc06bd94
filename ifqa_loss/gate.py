"""The face gate: a small network that says whether a discriminator's input is a face at all.

The IFQA discriminators instance-normalise their features, so a flat colour, a wall or noise
is judged on texture alone, and a black square can score above every real face. The gate
looks at the image without normalisation (absolute colour, contrast and layout survive) and
outputs the probability that it is a face photograph, of any quality, colour or age. The
metric multiplies its realness map by it (``IFQAMetric(face_gate=...)``), so an image that is
not a face scores near 0 while faces keep their score (the gate is near 1 for them), and
flags an image under :data:`FACE_THRESHOLD` ``"no_face"``. Judging quality is the
discriminator's job, not the gate's.

It is trained by :mod:`ifqa_loss.train.face_gate` on faces (clean, degraded, real low-quality,
grayscale, old, padded) against the degenerate images of :mod:`ifqa_loss.train.degenerate`,
and tested on the faces of :mod:`ifqa_loss.train.gate_faces`; the bundled one is
``ifqa_loss/bundled/face-gate.safetensors`` (model card, "Face gate"), loaded by
:func:`ifqa_loss.weights.load_face_gate`.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn

GATE_SIZE = 128  # the gate's input side; inputs of other sizes are resized to it
# Below this P(face), ``score_files`` flags an image ``"no_face"`` (its score is also scaled
# by P(face), so it is at most half of what the discriminator alone gives).
FACE_THRESHOLD = 0.5
# The gate sees the middle of the image (this fraction of each side), where an aligned crop
# has its face: the background of a face crop says little about whether it holds a face.
CENTRE = 0.75
# The command-line choices (``--face-gate``) as ``IFQAMetric(face_gate=...)`` values.
GATE_CHOICES = {"auto": "auto", "on": True, "off": False}


N_STATS = 2  # flat fraction, colour concentration (see :func:`flat_statistics`)


def flat_statistics(x: torch.Tensor) -> torch.Tensor:
    """Two numbers per image that a posterised or flat image cannot hide, (B, 3, H, W) RGB in
    [-1, 1] -> (B, 2), on the 8-bit grid:

    - the fraction of pixels whose 3 x 3 neighbourhood holds a single colour (a face photo has
      sensor noise and shading almost everywhere; a posterised face is flat almost everywhere);
    - the fraction of each channel's pixels on its 4 most frequent values, averaged over the
      channels (a few levels per channel cover nearly all of a posterised image).
    """
    v = ((x.float().clamp(-1, 1) + 1) * 127.5).round()
    spread = F.max_pool2d(v, 3, 1) + F.max_pool2d(-v, 3, 1)  # max - min around each pixel
    flat = (spread.amax(1) == 0).float().mean((1, 2))
    b, c = v.shape[:2]
    idx = v.flatten(2).long()
    hist = torch.zeros(b, c, 256, device=v.device).scatter_add_(
        2, idx, torch.ones_like(idx, dtype=torch.float32)
    )
    top = hist.topk(4, dim=2).values.sum(2) / idx.shape[2]
    return torch.stack([flat, top.mean(1)], dim=1)


class FaceGate(nn.Module):
    """Face-or-not classifier on (B, 3, S, S) RGB in [-1, 1] (the discriminators' input).

    It looks at the middle of the image (``CENTRE``): at 128 px through strided convolutions
    (no normalisation) down to 8 x 8, whose mean and max over the image are pooled, and at
    full resolution through :func:`flat_statistics`; two linear layers make one logit.
    """

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        w = int(width)
        chans = (3, 3 * w // 4, 3 * w // 2, 2 * w, 3 * w, 4 * w)
        layers: list[nn.Module] = []
        for i, (a, b) in enumerate(itertools.pairwise(chans)):
            last = i == len(chans) - 2  # 128 -> 64 -> 32 -> 16 -> 8 px, then one at 8 px
            layers += [nn.Conv2d(a, b, 3 if last else 4, 1 if last else 2, 1), nn.LeakyReLU(0.2)]
        self.features = nn.Sequential(*layers)
        self.stats = nn.Sequential(nn.Linear(N_STATS, 16), nn.LeakyReLU(0.2))
        self.head = nn.Sequential(
            nn.Linear(2 * chans[-1] + 16, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1)
        )
        self.width = w

    @staticmethod
    def prepare(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, stats)``: the middle ``CENTRE`` of each side resized to the gate's side
        (antialiased bilinear), and its :func:`flat_statistics` at full resolution."""
        h, w = x.shape[-2:]
        dh, dw = round(h * (1 - CENTRE) / 2), round(w * (1 - CENTRE) / 2)
        x = x[..., dh : h - dh, dw : w - dw]
        small = F.interpolate(
            x, size=(GATE_SIZE, GATE_SIZE), mode="bilinear", antialias=True, align_corners=False
        )
        return small, flat_statistics(x)

    def logits_prepared(self, x: torch.Tensor, stats: torch.Tensor) -> torch.Tensor:
        """Logits of :meth:`prepare`'s output, (B, 3, 128, 128) and (B, 2) -> (B,)."""
        f = self.features(x)
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3)), self.stats(stats)], dim=1)
        return self.head(pooled)[:, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits, (B, 3, S, S) RGB in [-1, 1] -> (B,); sigmoid gives P(face)."""
        if x.dim() != 4 or x.shape[1] != 3:
            raise ValueError(f"FaceGate expects (B, 3, H, W) RGB in [-1, 1], got {tuple(x.shape)}")
        return self.logits_prepared(*self.prepare(x))

    def probability(self, x: torch.Tensor) -> torch.Tensor:
        """P(face) per image, (B, 3, S, S) in [-1, 1] -> (B,) in [0, 1]."""
        return torch.sigmoid(self(x))

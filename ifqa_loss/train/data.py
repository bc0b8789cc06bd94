"""Clean aligned faces, the held-out split, and the per-rank stream of training samples.

Sampling is a pure function of ``(seed, rank, position)``: the sample at position ``p`` of a
rank's stream is the same whatever the number of DataLoader workers and whether the run was
resumed. The stream follows ``DistributedSampler``'s sharding: for epoch ``e`` the face indices
are permuted with seed ``(seed, e)``, padded to a multiple of the world size, and rank ``r``
takes every ``world``-th index starting at ``r``, so ranks see disjoint faces within an epoch.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from .._io import list_images
from ..faces.images import load_face
from ..preprocess import luma, resize_map
from .artefacts import random_artefact
from .config import DataConfig, DegradationConfig
from .degenerate import load_photo, random_degenerate
from .degradations import random_degradation


def shard_index(seed: int, position: int, n: int, rank: int, world: int) -> int:
    """Face index at ``position`` of rank ``rank``'s stream (DistributedSampler-style shards)."""
    per_rank = math.ceil(n / world)
    epoch, offset = divmod(position, per_rank)
    perm = np.random.default_rng([seed, 7, epoch]).permutation(n)
    total = per_rank * world
    if total > n:  # pad by repeating the start, as DistributedSampler does
        perm = np.concatenate([perm, perm[: total - n]])
    return int(perm[rank + offset * world])


class FaceStream(Dataset):
    """Training samples: item ``p`` is position ``p`` of this rank's stream.

    Each item is a dict with ``real`` and ``degraded``, both (3, S, S) float32 in [-1, 1] at the
    model's native size ``S``: the clean face resized with the metric's antialiased bilinear
    resize, and the same face degraded at one of ``degradation.sizes`` and resized the same way.

    Args:
        faces: clean faces, (3, base, base) uint8 tensors.
        backgrounds: whole photographs, (H, W, 3) float32 in [0, 1], for the non-face
            degenerate fakes (``degradation.degenerate_prob``).
    """

    def __init__(
        self,
        faces: Sequence[torch.Tensor],
        data: DataConfig,
        degradation: DegradationConfig,
        native_size: int,
        seed: int,
        rank: int = 0,
        world: int = 1,
        backgrounds: Sequence[np.ndarray] = (),
    ) -> None:
        if not faces:
            raise ValueError("FaceStream needs at least one face")
        self.faces = list(faces)
        self.data = data
        self.deg = degradation
        self.native = native_size
        self.seed = seed
        self.rank = rank
        self.world = world
        self.backgrounds = list(backgrounds)
        probs = degradation.size_probs
        self.size_probs = None if probs is None else np.asarray(probs, float) / float(sum(probs))

    def __len__(self) -> int:  # a stream; the sampler decides which positions are read
        return 2**62

    def __getitem__(self, position: int) -> dict[str, Any]:
        idx = shard_index(self.seed, position, len(self.faces), self.rank, self.world)
        rng = np.random.default_rng([self.seed, 11, self.rank, position])
        face = self.faces[idx].float() / 255.0
        if self.data.hflip and rng.random() < 0.5:
            face = face.flip(-1)
        if self.data.aug_prob and rng.random() < self.data.aug_prob:
            face = augment(face, self.data, rng)
        size = int(rng.choice(self.deg.sizes, p=self.size_probs))
        base = resize_map(face, size)
        img = np.ascontiguousarray(base.numpy().transpose(1, 2, 0), dtype=np.float32)
        real0 = resize_map(face, self.native)
        # drawn only when on, so that streams without artefacts keep their random draws
        artefact = bool(self.deg.artefact_prob) and rng.random() < self.deg.artefact_prob
        p_deg = self.deg.degenerate_prob
        if p_deg and not artefact and rng.random() < p_deg:
            out, _ = random_degenerate(img, self.deg.degenerate_weights, rng, self.backgrounds)
            fake = resize_map(torch.from_numpy(out.transpose(2, 0, 1).copy()), self.native)
            return _sample(real0, fake, idx)
        tries = max(1, self.deg.max_tries) if self.deg.max_psnr is not None else 1
        for _ in range(tries):
            real, fake = self._fake(img, real0, artefact, rng)
            if self.deg.max_psnr is None or psnr(real, fake) <= self.deg.max_psnr:
                break
        return _sample(real, fake, idx)

    def _fake(
        self, img: np.ndarray, real0: torch.Tensor, artefact: bool, rng: np.random.Generator
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One draw of ``(real, fake)`` at the native size from the clean ``img`` (HWC).

        The fake is an over-restoration artefact when ``artefact``, else a degradation; the real
        sample is ``real0``, turned gray when the degradation's gray option fires (as in GFPGAN:
        colour is no cue).
        """
        gray = False
        if artefact:
            out, _ = random_artefact(img, self.deg, rng)
        else:
            _, out, params = random_degradation(img, self.deg, rng)
            gray = params["gray"]
        real = real0
        if gray:
            real = luma(real0).expand(3, -1, -1).contiguous()
        fake = resize_map(torch.from_numpy(out.transpose(2, 0, 1).copy()), self.native)
        return real, fake


def _sample(real: torch.Tensor, fake: torch.Tensor, idx: int) -> dict[str, Any]:
    """A stream item: both images mapped from [0, 1] to [-1, 1]."""
    return {"real": real.clamp(0, 1) * 2 - 1, "degraded": fake.clamp(0, 1) * 2 - 1, "index": idx}


def augment(face: torch.Tensor, cfg: DataConfig, rng: np.random.Generator) -> torch.Tensor:
    """Random similarity transform and colour jitter of a (3, H, W) face in [0, 1]."""
    h, w = face.shape[-2:]
    scale = float(rng.uniform(*cfg.aug_scale))
    angle = float(rng.uniform(-cfg.aug_rotate, cfg.aug_rotate))
    tx, ty = rng.uniform(-cfg.aug_shift, cfg.aug_shift, 2) * (w, h)
    m = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), angle, scale)
    m[:, 2] += (tx, ty)
    img = np.ascontiguousarray(face.numpy().transpose(1, 2, 0))
    img = cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REFLECT_101)
    x = torch.from_numpy(img.transpose(2, 0, 1).copy())
    c = cfg.aug_color
    if c:
        b, k, sat = rng.uniform(1 - c, 1 + c, 3)
        x = x * float(b)
        mean = x.mean()
        x = (x - mean) * float(k) + mean
        gray = luma(x)
        x = (x - gray) * float(sat) + gray
    return ((x.clamp(0, 1) * 255.0).round() / 255.0).float()


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (inf when identical), by ``kornia.metrics.psnr``."""
    from kornia.metrics import psnr as kornia_psnr

    return float(kornia_psnr(a.double(), b.double(), 1.0))


class StreamSampler(Sampler[int]):
    """Positions ``start, start+1, ..., stop-1`` of a rank's stream."""

    def __init__(self, start: int, stop: int) -> None:
        self.start, self.stop = int(start), int(stop)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.start, self.stop))

    def __len__(self) -> int:
        return max(0, self.stop - self.start)


def load_faces_uint8(paths: Sequence[Path], size: int) -> list[torch.Tensor]:
    """Faces as (3, size, size) uint8 tensors (kept in memory for the whole run)."""
    return [(load_face(p, size) * 255.0).round().to(torch.uint8) for p in paths]


def photo_files(root: Path, data: DataConfig) -> list[Path]:
    """The files of ``data.photos`` under ``root``, without held-out and excluded ones."""
    if not data.photos:
        return []
    kept_out = {(root / v).resolve() for v in data.val}
    kept_out |= {p.resolve() for p in list_images(root, data.exclude)} if data.exclude else set()
    return [p for p in list_images(root, data.photos) if p.resolve() not in kept_out]


def photo_faces_uint8(
    paths: Sequence[Path], size: int, max_upscale: float, min_confidence: float = 0.3
) -> list[torch.Tensor]:
    """Every face dlib finds in the photographs, aligned to the FFHQ crop, as (3, size, size)
    uint8 tensors; a face enlarged by more than ``max_upscale`` to fill the crop, or detected
    with a confidence under ``min_confidence``, is skipped.

    Photographs are read with their long side shrunk to 2048 px (the gate's test photographs
    are read the same way). Needs the ``[align]`` extra (dlib).
    """
    from ..align import align_faces, require

    require()
    out = []
    for path in paths:
        photo = (load_photo(path, 2048) * 255.0).round().astype(np.uint8)
        for face in align_faces(photo, size=size):
            crop_px_per_photo_px = float(np.sqrt(abs(np.linalg.det(face.matrix[:, :2]))))
            if crop_px_per_photo_px <= max_upscale and face.face.confidence >= min_confidence:
                out.append(torch.from_numpy(face.crop.transpose(2, 0, 1).copy()))
    return out

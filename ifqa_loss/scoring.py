"""Scoring many files: decoding in DataLoader workers overlapped with the network.

:meth:`IFQAMetric.score_files` and ``ifqa score`` use this. A file is decoded and preprocessed
exactly as the original release does (:func:`~ifqa_loss.preprocess.official_file_tensor`), in
worker processes when ``workers > 0``, while the main process runs the network on the previous
batch. Files that cannot be read become records with an error; the rest are still scored.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .align import AlignedFace, AlignOptions
from .models.registry import ModelConfig
from .preprocess import official_array_tensor, official_file_tensor, read_image_bgr


class _FileDataset(Dataset):
    """Item ``i``: ``(i, (1, 3, S, S) tensor, None, None)`` for a readable file, or
    ``(i, None, error, None)``."""

    def __init__(self, paths: Sequence[str], config: ModelConfig) -> None:
        self.paths = list(paths)
        self.config = config

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, None]:
        try:
            return i, official_file_tensor(self.paths[i], self.config)[None], None, None
        except Exception as e:  # any unreadable file (decoder errors included) is one record
            return i, None, f"{type(e).__name__}: {e}", None


class _AlignedFileDataset(_FileDataset):
    """Item ``i``: ``(i, (n, 3, S, S) aligned faces, None, [face info] * n)`` for a photo
    with ``n >= 0`` faces, or ``(i, None, error, None)`` for an unreadable file.

    Each face is aligned (:func:`ifqa_loss.align.align_faces`) and its crop preprocessed as
    the original release preprocesses a file, so a face scores what its crop saved as a PNG
    would. The dlib models load once per worker process.
    """

    def __init__(self, paths: Sequence[str], config: ModelConfig, options: AlignOptions) -> None:
        super().__init__(paths, config)
        self.options = options

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None, list | None]:
        import cv2

        from .align import align_faces

        o = self.options
        try:
            rgb = cv2.cvtColor(read_image_bgr(self.paths[i]), cv2.COLOR_BGR2RGB)
            faces = align_faces(
                rgb, size=o.size, recipe=o.recipe, upsample=o.upsample, padding=o.padding
            )
        except Exception as e:  # unreadable, or too small to search: one record
            return i, None, f"{type(e).__name__}: {e}", None
        s = self.config.native_size
        tensors = [official_array_tensor(f.crop, self.config) for f in faces]
        batch = torch.stack(tensors) if tensors else torch.empty(0, 3, s, s)
        return i, batch, None, [_face_info(k, f) for k, f in enumerate(faces)]


def _face_info(index: int, face: AlignedFace) -> dict:
    """What a face's record holds besides its score, and its landmarks on the crop."""
    d = face.face
    return {
        "face": index,
        "box": [int(v) for v in d.box],
        "confidence": round(d.confidence, 4),
        "landmarks": np.round(d.landmarks5, 2).tolist(),
        "matrix": face.matrix.tolist(),
        "crop_landmarks": torch.from_numpy(face.landmarks68),
    }


def _collate(items: list) -> tuple[list[tuple[int, int, list | None]], torch.Tensor | None, list]:
    """``([(index, images in batch, face infos)], (N, 3, S, S) or None, [(index, error)])``."""
    good = [(i, t, info) for i, t, _, info in items if t is not None]
    errors = [(i, e) for i, t, e, _ in items if t is None]
    if not good:
        return [], None, errors
    return (
        [(i, t.shape[0], info) for i, t, info in good],
        torch.cat([t for _, t, _ in good]),
        errors,
    )


def file_batches(
    paths: Sequence[str],
    config: ModelConfig,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    align: AlignOptions | None = None,
) -> Iterator[tuple[list[tuple[int, int, list | None]], torch.Tensor | None, list]]:
    """Yield batches of ``batch_size`` files in input order.

    Each batch is ``([(index, images, face infos)], (N, 3, S, S) images or None,
    [(index, error)])``: a plain file gives one image and no infos; with ``align``, a photo
    gives one image per detected face (possibly none) and one info dict per face.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    dataset = (
        _FileDataset(paths, config) if align is None else _AlignedFileDataset(paths, config, align)
    )
    loader = DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=4 if workers else None,
        persistent_workers=False,
    )
    yield from loader


def default_workers() -> int:
    """Worker processes for decoding: up to 8, leaving one core for the main process."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not on Linux
        cores = os.cpu_count() or 1
    return max(0, min(8, cores - 1))


def _progress(total: int, enabled: bool | None):
    from tqdm import tqdm

    return tqdm(
        total=total,
        unit="img",
        disable=(not sys.stderr.isatty()) if enabled is None else not enabled,
        dynamic_ncols=True,
        smoothing=0.1,
    )


NO_FACE = "no face found"


def _photo_records(path: str, infos: list[dict] | None) -> list[dict]:
    """The records of one decoded file: one per face with ``align`` (one saying there is
    none for a photo without faces), else one."""
    if infos is None:
        return [{"path": path, "score": None, "error": None}]
    if not infos:
        return [{"path": path, "face": None, "faces": 0, "score": None, "error": NO_FACE}]
    return [
        {
            "path": path,
            "face": info["face"],
            "faces": len(infos),
            "box": info["box"],
            "confidence": info["confidence"],
            "score": None,
            "error": None,
            "landmarks": info["landmarks"],
            "matrix": info["matrix"],
        }
        for info in infos
    ]


def score_paths(
    maps_fn: Callable[[torch.Tensor], torch.Tensor],
    region_fn: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]] | None,
    paths: Sequence[str],
    config: ModelConfig,
    *,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    return_maps: bool = False,
    progress: bool | None = False,
    on_batch: Callable[[list[dict]], None] | None = None,
    align: AlignOptions | None = None,
) -> list[dict]:
    """Records for ``paths`` (see :meth:`IFQAMetric.score_files`), in input order.

    ``region_fn(maps, landmarks)`` gives the region means of (N, 1, S, S) maps; ``landmarks``
    is None for plain files and the faces' (N, 68, 2) points on their crops with ``align``.
    ``on_batch`` is called with each finished batch's records (maps included when
    ``return_maps``), e.g. to write heatmaps without keeping every map in memory. With
    ``align``, a file's records (one per face, or one saying it has none) are consecutive and
    always arrive in the same batch.
    """
    paths = [os.fspath(p) for p in paths]
    per_file: list[list[dict]] = [[{"path": p, "score": None, "error": None}] for p in paths]
    if align is not None:
        for recs in per_file:
            recs[0].update(face=None, faces=None)
    start = time.perf_counter()
    faces_done = 0
    with _progress(len(paths), progress) as bar:
        batches = file_batches(paths, config, batch_size, workers, pin_memory, align)
        for items, batch, errors in batches:
            done = []
            for i, err in errors:
                per_file[i][0]["error"] = err
                done += per_file[i]
            scored: list[dict] = []
            landmarks = []
            for i, n, infos in items:
                per_file[i] = _photo_records(paths[i], infos)
                done += per_file[i]
                scored += per_file[i][:n]
                landmarks += [info["crop_landmarks"] for info in infos or []]
            if batch is not None and batch.shape[0]:
                lm = torch.stack(landmarks) if landmarks else None
                _fill_scores(scored, maps_fn(batch), region_fn, lm, return_maps or on_batch)
            if on_batch is not None:
                on_batch(done)
                if not return_maps:
                    for rec in done:
                        rec.pop("map", None)
            faces_done += len(scored)
            bar.update(len(items) + len(errors))
            elapsed = max(time.perf_counter() - start, 1e-9)
            rate = f"{bar.n / elapsed:.1f} img/s"
            if align is not None:
                rate += f", {faces_done / elapsed:.1f} faces/s"
            bar.set_postfix_str(rate, refresh=False)
    return [rec for recs in per_file for rec in recs]


def _fill_scores(
    records: list[dict],
    maps: torch.Tensor,
    region_fn: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]] | None,
    landmarks: torch.Tensor | None,
    keep_maps: object,
) -> None:
    """Write the scores (and region means, maps) of (N, 1, S, S) ``maps`` into N records."""
    scores = maps.mean((1, 2, 3)).tolist()
    reg = None
    if region_fn is not None:  # one transfer per region, not one per value
        reg = {name: v.tolist() for name, v in region_fn(maps, landmarks).items()}
    cpu_maps = maps.cpu() if keep_maps else None
    for j, rec in enumerate(records):
        rec["score"] = scores[j]
        if reg is not None:
            for name, values in reg.items():
                rec[name] = values[j]
        if cpu_maps is not None:
            rec["map"] = cpu_maps[j]

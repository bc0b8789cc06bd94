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

from ..align import AlignedFace, AlignOptions
from ..gate import FACE_THRESHOLD
from ..models.registry import ModelConfig
from ..preprocess import DEFAULT_MAX_PIXELS, official_array_tensor, read_image_bgr
from .flags import NO_FACE as FLAG_NO_FACE
from .flags import image_flag


class _FileDataset(Dataset):
    """Item ``i``: ``(i, (1, 3, S, S) tensor, None, None, [flag])`` for a readable file, or
    ``(i, None, error, None, None)``.

    A file is decoded only if its header says it has at most ``max_pixels`` pixels
    (:func:`~ifqa_loss.preprocess.read_image_bgr`); its flag comes from
    :func:`~ifqa_loss.files.flags.image_flag`.
    """

    def __init__(
        self,
        paths: Sequence[str],
        config: ModelConfig,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        check_face: bool = False,
    ) -> None:
        self.paths = list(paths)
        self.config = config
        self.max_pixels = max_pixels
        self.check_face = check_face

    def __len__(self) -> int:
        return len(self.paths)

    def _read_rgb(self, i: int) -> np.ndarray:
        import cv2

        bgr = read_image_bgr(self.paths[i], self.max_pixels)
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB, dst=bgr)  # in place: one image in memory

    def __getitem__(self, i: int) -> tuple:
        try:
            rgb = self._read_rgb(i)
            flag = image_flag(rgb, self.check_face)
            return i, official_array_tensor(rgb, self.config)[None], None, None, [flag]
        except Exception as e:  # any unreadable file (decoder errors included) is one record
            return i, None, f"{type(e).__name__}: {e}", None, None


class _AlignedFileDataset(_FileDataset):
    """Item ``i``: ``(i, (n, 3, S, S) aligned faces, None, [face info] * n, [flag] * n)`` for
    a photo with ``n >= 0`` faces, or ``(i, None, error, None, None)`` for an unreadable file.

    Each face is aligned (:func:`ifqa_loss.align.align_faces`) and its crop preprocessed as
    the original release preprocesses a file, so a face scores what its crop saved as a PNG
    would. The dlib models load once per worker process.
    """

    def __init__(
        self,
        paths: Sequence[str],
        config: ModelConfig,
        options: AlignOptions,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ) -> None:
        super().__init__(paths, config, max_pixels)
        self.options = options

    def __getitem__(self, i: int) -> tuple:
        from ..align import align_faces

        o = self.options
        try:
            rgb = self._read_rgb(i)
            faces = align_faces(
                rgb, size=o.size, recipe=o.recipe, upsample=o.upsample, padding=o.padding
            )
        except Exception as e:  # unreadable, or too small to search: one record
            return i, None, f"{type(e).__name__}: {e}", None, None
        s = self.config.native_size
        tensors = [official_array_tensor(f.crop, self.config) for f in faces]
        batch = torch.stack(tensors) if tensors else torch.empty(0, 3, s, s)
        flags = [image_flag(f.crop) for f in faces]
        return i, batch, None, [_face_info(k, f) for k, f in enumerate(faces)], flags


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


def _collate(items: list) -> tuple[list[tuple], torch.Tensor | None, list]:
    """``([(index, images in batch, face infos, flags)], (N, 3, S, S) or None,
    [(index, error)])``."""
    good = [(i, t, info, flags) for i, t, _, info, flags in items if t is not None]
    errors = [(i, e) for i, t, e, _, _ in items if t is None]
    if not good:
        return [], None, errors
    return (
        [(i, t.shape[0], info, flags) for i, t, info, flags in good],
        torch.cat([t for _, t, _, _ in good]),
        errors,
    )


def file_batches(
    paths: Sequence[str],
    config: ModelConfig,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    align: AlignOptions | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_face: bool = False,
) -> Iterator[tuple[list[tuple], torch.Tensor | None, list]]:
    """Yield batches of ``batch_size`` files in input order.

    Each batch is ``([(index, images, face infos, flags)], (N, 3, S, S) images or None,
    [(index, error)])``: a plain file gives one image, no infos and one flag; with ``align``,
    a photo gives one image, one info dict and one flag per detected face (possibly none).
    Memory: each worker holds one decoded image at a time, at most ``max_pixels`` pixels.
    """
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if align is None:
        dataset = _FileDataset(paths, config, max_pixels, check_face)
    else:
        dataset = _AlignedFileDataset(paths, config, align, max_pixels)
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
        # tqdm's own rate, always in images/s (not s/img below 1/s); --align adds faces/s.
        bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}, "
        "{rate_noinv_fmt}{postfix}]",
    )


NO_FACE = "no face found"


def _photo_records(path: str, infos: list[dict] | None, flags: list[str | None]) -> list[dict]:
    """The records of one decoded file: one per face with ``align`` (one saying there is
    none for a photo without faces), else one; ``flags``: one per image scored."""
    if infos is None:
        return [{"path": path, "score": None, "error": None, "flag": flags[0]}]
    if not infos:
        return [
            {"path": path, "face": None, "faces": 0, "score": None, "error": NO_FACE, "flag": None}
        ]
    return [
        {
            "path": path,
            "face": info["face"],
            "faces": len(infos),
            "box": info["box"],
            "confidence": info["confidence"],
            "score": None,
            "error": None,
            "flag": flag,
            "landmarks": info["landmarks"],
            "matrix": info["matrix"],
        }
        for info, flag in zip(infos, flags, strict=True)
    ]


def score_paths(
    maps_fn: Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor | None]],
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
    max_pixels: int = DEFAULT_MAX_PIXELS,
    check_face: bool = False,
) -> list[dict]:
    """Records for ``paths`` (see :meth:`IFQAMetric.score_files`), in input order.

    ``maps_fn(batch)`` gives ``(maps, P(face) or None)`` (see ``IFQAMetric._maps_normalised``).
    ``region_fn(maps, landmarks)`` gives the region means of (N, 1, S, S) maps; ``landmarks``
    is None for plain files and the faces' (N, 68, 2) points on their crops with ``align``.
    ``on_batch`` is called with each finished batch's records (maps included when
    ``return_maps``), e.g. to write heatmaps without keeping every map in memory. With
    ``align``, a file's records (one per face, or one saying it has none) are consecutive and
    always arrive in the same batch.
    """
    paths = [os.fspath(p) for p in paths]
    per_file = [[{"path": p, "score": None, "error": None, "flag": None}] for p in paths]
    if align is not None:
        for recs in per_file:
            recs[0].update(face=None, faces=None)
    start = time.perf_counter()
    faces_done = 0
    with _progress(len(paths), progress) as bar:
        batches = file_batches(
            paths, config, batch_size, workers, pin_memory, align, max_pixels, check_face
        )
        for items, batch, errors in batches:
            done = []
            for i, err in errors:
                per_file[i][0]["error"] = err
                done += per_file[i]
            scored: list[dict] = []
            landmarks = []
            for i, n, infos, flags in items:
                per_file[i] = _photo_records(paths[i], infos, flags)
                done += per_file[i]
                scored += per_file[i][:n]
                landmarks += [info["crop_landmarks"] for info in infos or []]
            if batch is not None and batch.shape[0]:
                lm = torch.stack(landmarks) if landmarks else None
                maps, p_face = maps_fn(batch)
                _fill_scores(scored, maps, region_fn, lm, return_maps or on_batch)
                _fill_p_face(scored, p_face)
            if on_batch is not None:
                on_batch(done)
                if not return_maps:
                    for rec in done:
                        rec.pop("map", None)
            faces_done += len(scored)
            bar.update(len(items) + len(errors))
            if align is not None:
                elapsed = max(time.perf_counter() - start, 1e-9)
                bar.set_postfix_str(f"{faces_done / elapsed:.1f} faces/s", refresh=False)
    return [rec for recs in per_file for rec in recs]


def _fill_p_face(records: list[dict], p_face: torch.Tensor | None) -> None:
    """Write the face gate's P(face) into the records and flag those it calls no face (an
    image already flagged keeps its flag); nothing without a gate."""
    if p_face is None:
        return
    for rec, p in zip(records, p_face.tolist(), strict=True):
        rec["p_face"] = p
        if p < FACE_THRESHOLD and rec.get("flag") is None:
            rec["flag"] = FLAG_NO_FACE


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

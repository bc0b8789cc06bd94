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

import torch
from torch.utils.data import DataLoader, Dataset

from .models.registry import ModelConfig
from .preprocess import official_file_tensor


class _FileDataset(Dataset):
    """Item ``i``: ``(i, tensor, None)`` for a readable file, ``(i, None, error)`` otherwise."""

    def __init__(self, paths: Sequence[str], config: ModelConfig) -> None:
        self.paths = list(paths)
        self.config = config

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str | None]:
        try:
            return i, official_file_tensor(self.paths[i], self.config), None
        except Exception as e:  # any unreadable file (decoder errors included) is one record
            return i, None, f"{type(e).__name__}: {e}"


def _collate(items: list) -> tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]:
    good = [(i, t) for i, t, _ in items if t is not None]
    errors = [(i, e) for i, t, e in items if t is None]
    if not good:
        return [], None, errors
    idx, tensors = zip(*good, strict=True)
    return list(idx), torch.stack(tensors), errors


def file_batches(
    paths: Sequence[str],
    config: ModelConfig,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
) -> Iterator[tuple[list[int], torch.Tensor | None, list[tuple[int, str]]]]:
    """Yield ``(indices, (n, 3, S, S) batch or None, [(index, error), ...])`` in input order."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    loader = DataLoader(
        _FileDataset(paths, config),
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


def score_paths(
    maps_fn: Callable[[torch.Tensor], torch.Tensor],
    region_fn: Callable[[torch.Tensor], dict[str, torch.Tensor]] | None,
    paths: Sequence[str],
    config: ModelConfig,
    *,
    batch_size: int,
    workers: int = 0,
    pin_memory: bool = False,
    return_maps: bool = False,
    progress: bool | None = False,
    on_batch: Callable[[list[dict]], None] | None = None,
) -> list[dict]:
    """Records for ``paths`` (see :meth:`IFQAMetric.score_files`), in input order.

    ``on_batch`` is called with each finished batch's records (maps included when
    ``return_maps``), e.g. to write heatmaps without keeping every map in memory.
    """
    paths = [os.fspath(p) for p in paths]
    records: list[dict] = [{"path": p, "score": None, "error": None} for p in paths]
    start = time.perf_counter()
    with _progress(len(paths), progress) as bar:
        for idx, batch, errors in file_batches(paths, config, batch_size, workers, pin_memory):
            done = []
            for i, err in errors:
                records[i]["error"] = err
                done.append(records[i])
            if batch is not None:
                maps = maps_fn(batch)
                scores = maps.mean((1, 2, 3)).tolist()
                reg = None
                if region_fn is not None:  # one transfer per region, not one per value
                    reg = {name: v.tolist() for name, v in region_fn(maps).items()}
                cpu_maps = maps.cpu() if return_maps or on_batch is not None else None
                for j, i in enumerate(idx):
                    rec = records[i]
                    rec["score"] = scores[j]
                    if reg is not None:
                        for name, values in reg.items():
                            rec[name] = values[j]
                    if cpu_maps is not None:
                        rec["map"] = cpu_maps[j]
                    done.append(rec)
            if on_batch is not None:
                on_batch(done)
                if not return_maps:
                    for rec in done:
                        rec.pop("map", None)
            bar.update(len(idx) + len(errors))
            elapsed = time.perf_counter() - start
            bar.set_postfix_str(f"{bar.n / max(elapsed, 1e-9):.1f} img/s", refresh=False)
    return records

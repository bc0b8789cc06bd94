"""Fuzzing the file path of ``ifqa score``: a few hundred mutated PNG/JPEG/WebP/TIFF/BMP files.

The files are made here, seeded: bit flips (anywhere, and in the header), truncation, size
fields rewritten to huge values, zero-length chunks or segments, spliced bytes. They are scored
by the real command (decoding in worker processes) with a tiny random-weight network, in a
subprocess under a timeout, so a decoder crash or hang fails the test instead of killing it.
Every file must be scored or reported, and a run that fails midway must leave the result
files of an earlier run as they were.
"""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys
import zlib
from functools import partial
from pathlib import Path

import cv2
import numpy as np
import pytest

from ifqa_loss.metric import IFQAMetric
from ifqa_loss.models import IFQACNN, register_model
from ifqa_loss.models.registry import ModelConfig, get_model_config
from ifqa_loss.preprocess import DEFAULT_MAX_PIXELS, header_size
from ifqa_loss.weights import save_safetensors

REPO = Path(__file__).resolve().parent.parent
SEED = 23
PER_KIND = 10  # files per (format, mutation kind): 5 formats x 6 kinds x 10 = 300
FORMATS = {
    ".png": [],
    ".jpg": [cv2.IMWRITE_JPEG_QUALITY, 90],
    ".webp": [cv2.IMWRITE_WEBP_QUALITY, 80],
    ".tif": [],
    ".bmp": [],
}
KINDS = ("flip", "flip_header", "truncate", "huge_size", "zero_length", "splice")
HUGE = (0, 1, 0x3FFF, 0xFFFF, 100_000, 0x7FFFFFFF, 0xFFFFFFFF)
TINY = "fuzz-tiny"
# Registers the tiny model, then runs the real command line.
DRIVER = f"""
import sys
from functools import partial
from ifqa_loss.models import IFQACNN, register_model
from ifqa_loss.models.registry import ModelConfig
register_model(ModelConfig(name={TINY!r}, builder=partial(IFQACNN, width=0.125, native_size=64),
    native_size=64, interpolation="bilinear", weight_file="", source="fuzz test"))
from ifqa_loss.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _base_image() -> np.ndarray:
    """A (48, 40, 3) uint8 BGR image with structure (gradients and seeded noise)."""
    y, x = np.mgrid[0:48, 0:40]
    rng = np.random.default_rng(SEED)
    img = np.stack([x * 6, y * 5, (x + y) * 3], -1) + rng.integers(0, 40, (48, 40, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def _png_chunks(data: bytes) -> list[tuple[int, int]]:
    """(offset, data length) of each chunk of a PNG."""
    out, off = [], 8
    while off + 8 <= len(data):
        (n,) = struct.unpack(">I", data[off : off + 4])
        out.append((off, n))
        off += 12 + n
    return out


def _jpeg_segments(data: bytes) -> list[tuple[int, int]]:
    """(offset of the marker, marker byte) of each length-carrying JPEG segment before SOS."""
    out, off = [], 2
    while off + 4 <= len(data) and data[off] == 0xFF:
        marker = data[off + 1]
        out.append((off, marker))
        if marker == 0xDA:
            break
        off += 2 + struct.unpack(">H", data[off + 2 : off + 4])[0]
    return out


def _tiff_entries(data: bytes) -> dict[int, int]:
    """Tag -> offset of its 12-byte entry in the first IFD of a little-endian TIFF."""
    (ifd,) = struct.unpack("<I", data[4:8])
    (n,) = struct.unpack("<H", data[ifd : ifd + 2])
    entries = {}
    for k in range(n):
        off = ifd + 2 + 12 * k
        entries[struct.unpack("<H", data[off : off + 2])[0]] = off
    return entries


def _huge_size(data: bytearray, ext: str, rng: np.random.Generator) -> None:
    """Rewrite the width and/or height in the header to huge (or zero) values."""
    w, h = (int(rng.choice(HUGE)) for _ in range(2))
    if ext == ".png":  # IHDR, with its CRC fixed half the time so readers trust it
        data[16:24] = struct.pack(">II", w, h)
        if rng.random() < 0.5:
            data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    elif ext == ".jpg":  # SOF: precision, height, width
        off = next(o for o, m in _jpeg_segments(bytes(data)) if m in (0xC0, 0xC1, 0xC2))
        data[off + 5 : off + 9] = struct.pack(">HH", h & 0xFFFF, w & 0xFFFF)
    elif ext == ".webp":  # VP8 frame header: 14-bit width and height after the start code
        data[26:30] = struct.pack("<HH", w & 0x3FFF, h & 0x3FFF)
    elif ext == ".tif":  # ImageWidth, ImageLength as LONG
        entries = _tiff_entries(bytes(data))
        for tag, v in ((256, w), (257, h)):
            data[entries[tag] + 2 : entries[tag] + 12] = struct.pack("<HII", 4, 1, v)
    else:  # BMP: signed 32-bit width, height
        data[18:26] = struct.pack("<II", w, h)


def _zero_length(data: bytearray, ext: str, rng: np.random.Generator) -> bytearray:
    """Zero a chunk's, segment's or field's length, or insert an empty chunk."""
    if ext == ".png":
        chunks = _png_chunks(bytes(data))
        if rng.random() < 0.5:  # an empty chunk (valid CRC) before a random chunk
            off = chunks[int(rng.integers(1, len(chunks)))][0]
            tag = [b"IDAT", b"tEXt", b"zzZz", b"IHDR"][int(rng.integers(4))]
            empty = struct.pack(">I", 0) + tag + struct.pack(">I", zlib.crc32(tag))
            return data[:off] + empty + data[off:]
        off = chunks[int(rng.integers(len(chunks)))][0]
        data[off : off + 4] = bytes(4)
    elif ext == ".jpg":
        segments = _jpeg_segments(bytes(data))
        off = segments[int(rng.integers(len(segments)))][0]
        data[off + 2 : off + 4] = struct.pack(">H", int(rng.choice([0, 2])))
    elif ext == ".webp":  # the RIFF size or the first chunk's size
        off = int(rng.choice([4, 16]))
        data[off : off + 4] = bytes(4)
    elif ext == ".tif":  # the count of a strip field, or of the IFD
        entries = _tiff_entries(bytes(data))
        tag = int(rng.choice([273, 279, 258, 0]))
        if tag:
            data[entries[tag] + 4 : entries[tag] + 8] = bytes(4)
        else:
            (ifd,) = struct.unpack("<I", data[4:8])
            data[ifd : ifd + 2] = bytes(2)
    else:  # BMP: file size, pixel-data offset, header size or image size
        off = int(rng.choice([2, 10, 14, 34]))
        data[off : off + 4] = bytes(4)
    return data


def mutate(clean: bytes, ext: str, kind: str, rng: np.random.Generator) -> bytes:
    """One mutant of an encoded image."""
    data = bytearray(clean)
    if kind in ("flip", "flip_header"):
        span = min(len(data), 64) if kind == "flip_header" else len(data)
        for _ in range(int(rng.integers(1, 9))):
            data[int(rng.integers(span))] ^= 1 << int(rng.integers(8))
    elif kind == "truncate":
        data = data[: int(rng.integers(len(data)))]
    elif kind == "huge_size":
        _huge_size(data, ext, rng)
    elif kind == "zero_length":
        data = _zero_length(data, ext, rng)
    else:  # splice: random bytes inserted, or a stretch repeated
        a = int(rng.integers(len(data)))
        if rng.random() < 0.5:
            data[a:a] = rng.integers(0, 256, int(rng.integers(1, 64)), np.uint8).tobytes()
        else:
            b = min(len(data), a + int(rng.integers(1, 256)))
            data[a:a] = data[a:b]
    return bytes(data)


def make_fuzz_files(folder: Path) -> list[Path]:
    """The clean images and PER_KIND mutants per format and kind, seeded."""
    rng = np.random.default_rng(SEED)
    img = _base_image()
    files = []
    for ext, params in FORMATS.items():
        ok, buf = cv2.imencode(ext, img, params)
        assert ok, ext
        clean = buf.tobytes()
        (folder / f"clean{ext}").write_bytes(clean)
        files.append(folder / f"clean{ext}")
        for kind in KINDS:
            for k in range(PER_KIND):
                path = folder / f"{kind}_{k:02d}{ext}"
                path.write_bytes(mutate(clean, ext, kind, rng))
                files.append(path)
    return files


@pytest.fixture(scope="module")
def fuzz_dir(tmp_path_factory) -> tuple[Path, list[Path]]:
    folder = tmp_path_factory.mktemp("fuzz")
    return folder, make_fuzz_files(folder)


@pytest.fixture(scope="module")
def tiny_weights(tmp_path_factory) -> Path:
    import torch

    torch.manual_seed(SEED)
    net = IFQACNN(width=0.125, native_size=64)
    return save_safetensors(net.state_dict(), tmp_path_factory.mktemp("w") / "tiny.safetensors")


def _run_cli(args: list[str], timeout: float) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-c", DRIVER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def test_mutants_are_many_and_distinct(fuzz_dir):
    files = fuzz_dir[1]
    assert len(files) == len(FORMATS) * (1 + len(KINDS) * PER_KIND) == 305
    clean = {f.suffix: f.read_bytes() for f in files if f.stem == "clean"}
    changed = sum(f.read_bytes() != clean[f.suffix] for f in files if f.stem != "clean")
    assert changed >= 290  # a huge-size rewrite may rarely write the values already there
    huge = [f for f in files if f.stem.startswith("huge_size")]
    over = [f for f in huge if (s := header_size(f)) and s[0] * s[1] > DEFAULT_MAX_PIXELS]
    assert len(over) >= 10  # the pixel limit is exercised, not only the decoders


@pytest.mark.slow
def test_every_mutant_is_scored_or_reported(fuzz_dir, tiny_weights, tmp_path):
    folder, files = fuzz_dir
    out = tmp_path / "out.json"
    args = ["score", str(folder), "--model", TINY, "--weights", str(tiny_weights)]
    args += ["--device", "cpu", "--workers", "2", "--batch-size", "64", "--json", str(out)]
    run = _run_cli(args, timeout=240)
    assert run.returncode == 3, run.stderr[-3000:]  # some files failed, none crashed the run
    records = json.loads(out.read_text())["records"]
    assert sorted(r["path"] for r in records) == sorted(str(f) for f in files)
    for r in records:
        assert (r["score"] is None) != (r["error"] is None), r
        if r["score"] is not None:
            assert 0.0 <= r["score"] <= 1.0, r
        else:
            assert r["error"].split(":")[0] in ("ValueError", "FileNotFoundError"), r
    by_path = {r["path"]: r for r in records}
    assert all(by_path[str(folder / f"clean{ext}")]["score"] is not None for ext in FORMATS)
    for f in files:  # what the header says is too large is refused, not decoded
        size = header_size(f)
        if size is not None and size[0] * size[1] > DEFAULT_MAX_PIXELS:
            assert "pixels, above the limit of 100,000,000" in by_path[str(f)]["error"], f
    n_scored = sum(r["score"] is not None for r in records)
    assert 5 < n_scored < len(files)


@pytest.fixture
def tiny_model():
    try:
        get_model_config(TINY)
    except ValueError:
        register_model(
            ModelConfig(
                name=TINY,
                builder=partial(IFQACNN, width=0.125, native_size=64),
                native_size=64,
                interpolation="bilinear",
                weight_file="",
                source="fuzz test",
            )
        )
    return TINY


def test_a_run_failing_midway_keeps_earlier_results(
    fuzz_dir, tiny_weights, tiny_model, tmp_path, monkeypatch
):
    from ifqa_loss.cli import main

    folder, files = fuzz_dir
    csv_out, json_out = tmp_path / "res.csv", tmp_path / "res.json"
    common = ["--model", tiny_model, "--weights", str(tiny_weights), "--device", "cpu"]
    common += ["--workers", "0", "--batch-size", "8", "--csv", str(csv_out)]
    common += ["--json", str(json_out)]
    clean = [str(f) for f in files if f.stem == "clean"]
    assert main(["score", *clean, *common]) == 0
    before = {p: p.read_bytes() for p in (csv_out, json_out)}
    assert len(json.loads(before[json_out])["records"]) == 5

    real = IFQAMetric._maps_normalised
    calls = {"n": 0}

    def fail_on_third_batch(self, x, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("injected failure in the third batch")
        return real(self, x, **kwargs)

    monkeypatch.setattr(IFQAMetric, "_maps_normalised", fail_on_third_batch)
    with pytest.raises(RuntimeError, match="injected failure"):
        main(["score", str(folder), *common])
    assert calls["n"] == 3
    assert {p: p.read_bytes() for p in before} == before  # not lost, not half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["res.csv", "res.json"]  # no temp

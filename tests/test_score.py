"""``ifqa score`` at scale: failures, odd image formats, kills, heatmaps, workers, torchrun."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from ifqa_loss.cli import EXIT_ALL_FAILED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main
from ifqa_loss.files.heatmap import colorize

LITE = ["--model", "ifqa-lite", "--device", "cpu"]


def rows_of(path: Path) -> tuple[list[str], list[dict]]:
    """(column names, rows) of a CSV written by ``ifqa score``."""
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    return list(reader.fieldnames or []), rows


def face(seed: int, size: int = 64) -> np.ndarray:
    """A smooth random BGR image (so resizing does not make it trivially flat)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)


@pytest.fixture
def mixed(tmp_path) -> Path:
    d = tmp_path / "mixed"
    d.mkdir()
    for i in range(3):
        cv2.imwrite(str(d / f"good{i}.png"), face(i))
    cv2.imwrite(str(d / "good3.jpg"), face(3))
    _, buf = cv2.imencode(".png", face(4))
    (d / "corrupt.png").write_bytes(buf.tobytes()[: len(buf) // 2])  # truncated PNG
    (d / "text.png").write_text("this is not an image\n")
    (d / "empty.png").write_bytes(b"")
    (d / "notes.txt").write_text("a log beside the images\n")
    return d


def test_folder_with_bad_files(mixed, tmp_path, capsys):
    out_csv, out_json = tmp_path / "r.csv", tmp_path / "r.json"
    rc = main(["score", str(mixed), *LITE, "--csv", str(out_csv), "--json", str(out_json)])
    assert rc == EXIT_SOME_FAILED
    out, err = capsys.readouterr()
    assert out.startswith("# model: ifqa-lite  weights: ")
    assert "scored 4 of 7 (failed 3)" in out
    assert "skipped 1 non-image file(s)" in err and "notes.txt" in err
    header, rows = rows_of(out_csv)
    assert header == ["path", "score", "error", "flag"]  # plain CSV; provenance in the JSON
    by_name = {Path(r["path"]).name: r for r in rows}
    assert sorted(by_name) == sorted(
        ["corrupt.png", "empty.png", "good0.png", "good1.png", "good2.png", "good3.jpg", "text.png"]
    )
    for name in ("corrupt.png", "empty.png", "text.png"):
        assert by_name[name]["score"] == "" and "cannot decode" in by_name[name]["error"]
    for name in ("good0.png", "good1.png", "good2.png", "good3.jpg"):
        assert 0.0 < float(by_name[name]["score"]) < 1.0 and by_name[name]["error"] == ""
    doc = json.loads(out_json.read_text())
    assert doc["meta"]["model"] == "ifqa-lite" and "ifqa_loss" in doc["meta"]
    assert doc["summary"]["scored"] == 4 and doc["summary"]["failed"] == 3
    assert doc["summary"]["skipped"] == 1 and doc["skipped"][0].endswith("notes.txt")
    good = [r["score"] for r in doc["records"] if r["score"] is not None]
    assert doc["summary"]["mean"] == pytest.approx(float(np.mean(good)))
    assert doc["summary"]["min"] == min(good) and doc["summary"]["max"] == max(good)


def test_explicit_non_image_is_an_error_and_all_failed_code(mixed, tmp_path, capsys):
    out_csv = tmp_path / "r.csv"
    rc = main(["score", str(mixed / "notes.txt"), str(mixed / "empty.png"), *LITE])
    assert rc == EXIT_ALL_FAILED
    rc = main(["score", str(mixed / "notes.txt"), str(mixed / "good0.png"), *LITE])
    assert rc == EXIT_SOME_FAILED
    rc = main(["score", str(mixed / "good*.png"), *LITE, "--csv", str(out_csv)])
    assert rc == EXIT_OK and len(rows_of(out_csv)[1]) == 3
    capsys.readouterr()
    rc = main(["score", str(mixed / "does-not-exist.png"), *LITE])
    assert rc == EXIT_USAGE  # said before the model loads (tests/test_cli.py)
    assert "no such file or folder" in capsys.readouterr().err


def test_gray_rgba_and_16_bit_score_like_their_8_bit_rgb(tmp_path):
    from ifqa_loss import IFQAMetric

    d = tmp_path / "formats"
    d.mkdir()
    rgb = face(7, 96)
    rng = np.random.default_rng(0)
    gray = cv2.cvtColor(rgb, cv2.COLOR_BGR2GRAY)
    wide = rng.integers(0, 65536, rgb.shape, dtype=np.uint16)  # truly 16-bit content
    alpha = rng.integers(0, 256, rgb.shape[:2], dtype=np.uint8)
    files = {
        "gray8.png": (gray, np.dstack([gray] * 3)),
        "gray16.png": (gray.astype(np.uint16) * 257, np.dstack([gray] * 3)),
        "rgb16.png": (rgb.astype(np.uint16) * 257, rgb),
        "wide16.png": (wide, (wide >> 8).astype(np.uint8)),  # high byte, like libpng
        "rgba8.png": (np.dstack([rgb, alpha]), rgb),  # alpha ignored, like the original
        "rgba16.png": (np.dstack([rgb, alpha]).astype(np.uint16) * 257, rgb),
    }
    pairs = []
    for name, (img, ref) in files.items():
        cv2.imwrite(str(d / name), img)
        cv2.imwrite(str(d / f"ref_{name}"), ref)
        pairs.append((str(d / name), str(d / f"ref_{name}")))
    assert cv2.imread(str(d / "rgba16.png"), cv2.IMREAD_UNCHANGED).shape[2] == 4  # really RGBA
    metric = IFQAMetric(model="ifqa-lite", device="cpu")
    recs = metric.score_files([p for pair in pairs for p in pair])
    assert all(r["error"] is None for r in recs)
    for k in range(len(pairs)):
        assert recs[2 * k]["score"] == recs[2 * k + 1]["score"], pairs[k][0]
    assert len({r["score"] for r in recs}) > 2  # the different images do score differently


def test_workers_and_batches_do_not_change_scores(mixed):
    from ifqa_loss import IFQAMetric

    paths = sorted(str(p) for p in mixed.iterdir())
    one = IFQAMetric(model="ifqa-lite", device="cpu", batch_size=1).score_files(paths)
    many = IFQAMetric(model="ifqa-lite", device="cpu", batch_size=3).score_files(
        paths, workers=2, regions=True
    )
    assert [r["path"] for r in many] == paths
    for a, b in zip(one, many, strict=True):
        assert (a["error"] is None) == (b["error"] is None)
        if a["score"] is not None:
            assert b["score"] == pytest.approx(a["score"], abs=1e-6)
            assert 0.0 <= b["eyes"] <= 1.0 and 0.0 <= b["rest"] <= 1.0


def test_heatmaps_written_with_region_columns(mixed, tmp_path):
    from ifqa_loss import IFQAMetric

    heat, out_csv = tmp_path / "heat", tmp_path / "r.csv"
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(mixed / "good0.png", other / "good0.png")  # same stem, another folder
    rc = main(
        ["score", str(mixed), str(other), *LITE, "--heatmaps", str(heat), "--csv", str(out_csv)]
    )
    assert rc == EXIT_SOME_FAILED
    _, rows = rows_of(out_csv)
    good = [r for r in rows if r["score"]]
    assert len(good) == 5
    overlays = {r["heatmap"] for r in good}
    assert len(overlays) == 5  # the two good0.png get distinct names
    metric = IFQAMetric(model="ifqa-lite", device="cpu")
    for r in good:
        assert {"eyes", "nose", "mouth", "rest"} <= r.keys() and float(r["eyes"]) > 0
        ov = cv2.imread(r["heatmap"])
        assert ov.shape == cv2.imread(r["path"]).shape  # overlay at the image's size
        cmap = cv2.imread(r["heatmap"].replace("_overlay.png", "_map.png"))
        m = metric.score_files([r["path"]], return_maps=True)[0]["map"]
        # the original release's colour map; batched and one-at-a-time scoring may differ in
        # the last float bits, which can move a pixel to the neighbouring colour-map entry
        want = colorize(m)
        diff = np.abs(cmap.astype(int) - want.astype(int))
        assert diff.max() <= 8 and (diff.max(-1) == 0).mean() > 0.999, (diff.max(), diff.mean())
    assert not list(heat.glob(".*"))  # no temporary files left


@pytest.mark.slow
def test_kill_mid_run_leaves_no_partial_output(tmp_path):
    d = tmp_path / "many"
    d.mkdir()
    img = face(1, 32)
    for i in range(400):
        cv2.imwrite(str(d / f"{i:04d}.png"), img)
    out_csv, out_json, heat = tmp_path / "r.csv", tmp_path / "r.json", tmp_path / "heat"
    out_csv.write_text("previous complete results\n")
    cmd = [sys.executable, "-m", "ifqa_loss.cli", "score", str(d), *LITE, "--batch-size", "1"]
    cmd += ["--workers", "0", "--csv", str(out_csv), "--json", str(out_json)]
    cmd += ["--heatmaps", str(heat)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and len(list(heat.glob("*_overlay.png"))) < 3:
            assert proc.poll() is None, "the run ended before it could be killed"
            time.sleep(0.05)
        assert len(list(heat.glob("*_overlay.png"))) >= 3, "the run did not start scoring"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    written = len(list(heat.glob("*_overlay.png")))
    assert written < 400  # it really was killed mid-run
    assert out_csv.read_text() == "previous complete results\n"
    assert not out_json.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    for p in heat.glob("*.png"):  # every heatmap that exists is complete
        assert cv2.imread(str(p)) is not None, p


def test_progress_bar_reports_images_per_second(mixed, capsys):
    main(["score", str(mixed / "good0.png"), str(mixed / "good1.png"), *LITE, "--progress"])
    err = capsys.readouterr().err
    assert "2/2" in err and "img/s" in err


@pytest.mark.slow
def test_torchrun_two_processes_merge_like_one(tmp_path):
    pytest.importorskip("torch.distributed.run")
    d = tmp_path / "set"
    d.mkdir()
    for i in range(7):
        cv2.imwrite(str(d / f"f{i}.png"), face(10 + i))
    (d / "broken.png").write_bytes(b"not a png")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    args = ["score", str(d), *LITE, "--batch-size", "1", "--workers", "0", "--regions"]

    def run(nproc: int, name: str) -> Path:
        out = tmp_path / f"{name}.csv"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd += [f"--nproc_per_node={nproc}", "-m", "ifqa_loss.cli", *args, "--csv", str(out)]
        res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        # torchrun turns a worker's exit code 3 (some files failed) into its own 1.
        assert res.returncode != 0 and "exitcode  : 3" in res.stderr, res.stderr[-3000:]
        return out

    one, two = run(1, "one"), run(2, "two")
    h1, rows1 = rows_of(one)
    h2, rows2 = rows_of(two)
    assert h1 == h2
    assert rows1 == rows2
    assert [Path(r["path"]).name for r in rows2] == ["broken.png"] + [f"f{i}.png" for i in range(7)]

"""``ifqa compare``: ranking, intervals, wins, matching, report files, errors, Chromium."""

from __future__ import annotations

import argparse
import base64
import csv
import html
import json
import math
import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import cv2
import numpy as np
import pytest
from conftest import BrightnessD

from ifqa_loss import IFQAMetric
from ifqa_loss.cli import build_parser
from ifqa_loss.cli.compare import cmd_compare
from ifqa_loss.compare.comparison import _bootstrap_ci, compare

# Grey level of each method's output per face. BrightnessD scores a flat grey image v as
# sigmoid(8 * (v / 127.5 - 1)), so brighter is better and the expected results are exact.
LEVELS = {
    "A": {"f0.png": 160, "f1.png": 140, "f2.png": 120},
    "B": {"f0.png": 150, "f1.png": 145, "f2.png": 110},
    "C": {"f0.png": 120, "f1.png": 120, "f2.png": 120},
}


def expected_score(v: int) -> float:
    return 1.0 / (1.0 + math.exp(-8.0 * (v / 127.5 - 1.0)))


def write_grey(path: Path, v: int, size: int = 32) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.full((size, size, 3), v, np.uint8))


def make_methods(root: Path, levels: dict[str, dict[str, int]]) -> list[Path]:
    dirs = []
    for name, faces in levels.items():
        for face, v in faces.items():
            write_grey(root / name / face, v)
        dirs.append(root / name)
    return dirs


@pytest.fixture
def metric():
    return IFQAMetric(model=BrightnessD(), device="cpu", batch_size=4)


class ImgSrc(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.srcs.append(dict(attrs)["src"])


def img_srcs(index: Path) -> list[str]:
    p = ImgSrc()
    p.feed(index.read_text(encoding="utf-8"))
    return p.srcs


def test_ranking_interval_wins_and_worst_first(tmp_path, metric):
    dirs = make_methods(tmp_path / "in", LEVELS)
    s = compare(dirs, out=tmp_path / "r1", metric=metric, bootstrap=500, seed=3, quiet=True)

    means = {m: np.mean([expected_score(v) for v in f.values()]) for m, f in LEVELS.items()}
    assert [r["method"] for r in s["ranking"]] == sorted(means, key=means.get, reverse=True)
    for r in s["ranking"]:
        assert r["mean"] == pytest.approx(means[r["method"]], abs=1e-5)
        assert r["ci_low"] <= r["mean"] <= r["ci_high"]
        assert r["eyes"] == pytest.approx(r["mean"], abs=1e-5)  # flat images: every region
    # f0: A; f1: B; f2: A and C tie (same grey level), a win for each.
    assert {r["method"]: r["wins"] for r in s["ranking"]} == {"A": 2, "B": 1, "C": 1}
    # Worst face first, by the mean over the methods.
    assert [f["face"] for f in s["faces"]] == ["f2.png", "f1.png", "f0.png"]
    assert [f["mean"] for f in s["faces"]] == sorted(f["mean"] for f in s["faces"])

    again = compare(dirs, out=tmp_path / "r2", metric=metric, bootstrap=500, seed=3, quiet=True)
    assert [(r["ci_low"], r["ci_high"]) for r in again["ranking"]] == [
        (r["ci_low"], r["ci_high"]) for r in s["ranking"]
    ]

    saved = json.loads((tmp_path / "r1" / "results.json").read_text(encoding="utf-8"))
    assert saved["ranking"] == s["ranking"]
    assert saved["meta"]["model"] == metric.model_name
    assert saved["meta"]["weights_origin"] == metric.weights_origin
    rows = list(csv.DictReader((tmp_path / "r1" / "results.csv").open(encoding="utf-8")))
    assert len(rows) == 9 and rows[0]["face"] == "f2.png"
    assert {r["method"] for r in rows} == {"A", "B", "C"}
    html = (tmp_path / "r1" / "index.html").read_text(encoding="utf-8")
    for r in s["ranking"]:
        assert f"{r['ci_low']:.4f} – {r['ci_high']:.4f}" in html
    assert html.index("Ranking") < html.index("distribution.png") < html.index("f2.png")
    assert html.index("f2.png") < html.index("f1.png") < html.index("f0.png")


def test_bootstrap_is_paired_seeded_and_brackets_the_mean():
    scores = np.random.default_rng(0).uniform(0.2, 0.8, size=(40, 3))
    lo, hi = _bootstrap_ci(scores, 2000, seed=0)
    assert np.all(lo < scores.mean(0)) and np.all(scores.mean(0) < hi)
    lo2, hi2 = _bootstrap_ci(scores, 2000, seed=0)
    assert np.array_equal(lo, lo2) and np.array_equal(hi, hi2)
    lo3, _ = _bootstrap_ci(scores, 2000, seed=1)
    assert not np.array_equal(lo, lo3)
    # Roughly the normal-theory interval of a mean of 40 uniform values.
    half = 1.96 * scores.std(0, ddof=1) / np.sqrt(40)
    assert np.allclose(hi - lo, 2 * half, rtol=0.2)
    assert _bootstrap_ci(scores, 0, seed=0) == (None, None)


def test_unmatched_and_unreadable_faces(tmp_path, metric, capsys):
    levels = {"A": dict(LEVELS["A"]), "B": dict(LEVELS["B"])}
    levels["A"]["only_in_a.png"] = 100
    levels["A"]["sub/also_a.png"] = 100
    del levels["B"]["f0.png"]
    dirs = make_methods(tmp_path / "in", levels)
    (dirs[0] / "notes.txt").write_text("not an image")
    (dirs[1] / "f2.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")

    s = compare(dirs, names=["A", "B"], out=tmp_path / "r", metric=metric, bootstrap=50)
    err = capsys.readouterr().err
    assert "3 file(s) in 'A' are not in every folder" in err
    assert metric.model_name in err
    meta = s["meta"]
    assert meta["unmatched"] == {"A": ["f0.png", "only_in_a.png", "sub/also_a.png"], "B": []}
    assert meta["n_faces"] == 2 and meta["n_valid"] == 1 and meta["excluded"] == ["f2.png"]

    # The unreadable face comes first, with its error, and counts for no method.
    first = s["faces"][0]
    assert first["face"] == "f2.png" and first["excluded"]
    assert (
        first["methods"]["B"]["score"] is None and "cannot decode" in first["methods"]["B"]["error"]
    )
    assert first["methods"]["A"]["score"] is not None
    by = {r["method"]: r for r in s["ranking"]}
    assert by["A"]["mean"] == pytest.approx(expected_score(140), abs=1e-5)
    assert by["B"]["mean"] == pytest.approx(expected_score(145), abs=1e-5)
    assert by["A"]["wins"] + by["B"]["wins"] == 1

    html = (tmp_path / "r" / "index.html").read_text(encoding="utf-8")
    assert "A: 3, B: 0" in html
    assert "cannot decode" in html and "left out of the means" in html


def test_report_links_and_escaping(tmp_path, metric):
    names = ["<b>GFP</b> & co", "../evil", "Ünïcode méthode"]
    levels = {
        n: {"sub dir/face #1 é.png": 130 + 5 * i, "x/y'z.jpg": 120 + 5 * i}
        for i, n in enumerate(["m1", "m2", "m3"])
    }
    dirs = make_methods(tmp_path / "in", levels)
    out = tmp_path / "report out"
    compare(dirs, names=names, out=out, metric=metric, bootstrap=20, quiet=True)

    html = (out / "index.html").read_text(encoding="utf-8")
    assert "<b>GFP</b>" not in html and "&lt;b&gt;GFP&lt;/b&gt; &amp; co" in html
    assert "http://" not in html and "https://" not in html and "<link" not in html
    srcs = img_srcs(out / "index.html")
    assert len(srcs) == 1 + 2 * 3 * 2  # the plot, then an image and a heatmap per method and face
    root = out.resolve()
    for src in srcs:
        assert "://" not in src and not src.startswith("/")
        target = (out / unquote(src)).resolve()
        assert target.is_file(), src
        assert root in target.parents, src
    assert (out / "distribution.png").stat().st_size > 0
    thumbs = sorted(p.relative_to(out).as_posix() for p in (out / "images").rglob("*.jpg"))
    assert len(thumbs) == 6 and all(re.fullmatch(r"images/[\w-]+/[\w-]+\.jpg", t) for t in thumbs)
    heat = cv2.imread(str(next((out / "heatmaps").rglob("*.jpg"))))
    assert heat is not None and heat.shape == (32, 32, 3)


def test_one_folder_is_a_report_too(tmp_path, metric):
    dirs = make_methods(tmp_path / "in", {"A": LEVELS["A"]})
    s = compare(dirs, out=tmp_path / "r", metric=metric, bootstrap=20, quiet=True)
    assert [r["method"] for r in s["ranking"]] == ["A"] and s["ranking"][0]["wins"] == 3


def test_default_names_of_same_named_folders(tmp_path, metric):
    for m, v in (("gfpgan", 150), ("codeformer", 130)):
        write_grey(tmp_path / m / "results" / "f.png", v)
    dirs = [tmp_path / "gfpgan" / "results", tmp_path / "codeformer" / "results"]
    s = compare(dirs, out=tmp_path / "r", metric=metric, bootstrap=0, quiet=True)
    assert [r["method"] for r in s["ranking"]] == ["gfpgan/results", "codeformer/results"]
    assert s["ranking"][0]["ci_low"] is None


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("none", "at least one folder"),
        ("names", "2 name(s) for 3 folder(s)"),
        ("duplicate", "duplicate method names ['x']"),
        ("missing", "does not exist"),
        ("file", "is not a folder"),
        ("disjoint", "no image file is present in every folder"),
        ("bootstrap", "bootstrap must be >= 0"),
    ],
)
def test_bad_inputs(tmp_path, metric, case, message):
    dirs = make_methods(tmp_path / "in", LEVELS)
    kwargs: dict = {}
    if case == "none":
        dirs = []
    elif case == "names":
        kwargs["names"] = ["x", "y"]
    elif case == "duplicate":
        kwargs["names"] = ["x", "y", "x"]
    elif case == "missing":
        dirs.append(tmp_path / "nowhere")
    elif case == "file":
        dirs.append(dirs[0] / "f0.png")
    elif case == "disjoint":
        write_grey(tmp_path / "other" / "g.png", 100)
        dirs.append(tmp_path / "other")
    elif case == "bootstrap":
        kwargs["bootstrap"] = -1
    with pytest.raises(ValueError, match=re.escape(message)):
        compare(dirs, out=tmp_path / "r", metric=metric, quiet=True, **kwargs)
    assert not (tmp_path / "r").exists()


def test_report_without_matplotlib_has_everything_but_the_plot(tmp_path, metric, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib now fails
    dirs = make_methods(tmp_path / "in", LEVELS)
    summary = compare(dirs, out=tmp_path / "r", metric=metric, quiet=True)
    assert summary["meta"]["plot"] is None and summary["ranking"][0]["mean"] is not None
    page = (tmp_path / "r" / "index.html").read_text()
    assert 'pip install "ifqa-loss[report]"' in html.unescape(page)
    assert "distribution.png" not in page and not (tmp_path / "r" / "distribution.png").exists()
    assert (tmp_path / "r" / "results.csv").is_file() and "<img" in page  # faces still shown


def test_rewrite_replaces_files_atomically(tmp_path, metric):
    dirs = make_methods(tmp_path / "in", LEVELS)
    out = tmp_path / "r"
    out.mkdir()
    (out / "index.html").write_text("old report")
    (out / "results.json").write_text("{}")
    (out / "keep.txt").write_text("someone else's file")
    compare(dirs, out=out, metric=metric, bootstrap=20, quiet=True)
    assert "IFQA comparison" in (out / "index.html").read_text(encoding="utf-8")
    assert json.loads((out / "results.json").read_text(encoding="utf-8"))["ranking"]
    assert (out / "keep.txt").read_text() == "someone else's file"
    compare(dirs, out=out, metric=metric, bootstrap=20, quiet=True)  # over a complete report
    leftovers = [p for p in out.rglob("*") if p.name.startswith(".") or p.suffix == ".tmp"]
    assert leftovers == []


def cli_parser() -> argparse.ArgumentParser:
    return build_parser("compare")


def test_cli(tmp_path, capsys):
    dirs = make_methods(tmp_path / "in", {m: {"f0.png": f["f0.png"]} for m, f in LEVELS.items()})
    out = tmp_path / "r"
    argv = ["compare", *map(str, dirs), "--names", "a", "b", "c", "--out", str(out)]
    argv += ["--model", "ifqa-lite", "--device", "cpu"]
    args = cli_parser().parse_args([*argv, "--bootstrap", "10", "--seed", "1"])
    assert args.func is cmd_compare
    assert args.func(args) == 0
    text = capsys.readouterr().out
    assert text.startswith("# model: ifqa-lite  weights: ")
    assert f"wrote {out / 'report.html'} (one file, pictures inside" in text
    assert json.loads((out / "results.json").read_text())["meta"]["model"] == "ifqa-lite"

    args = cli_parser().parse_args([*argv, "--names", "a", "b"])  # the last --names wins
    assert args.func(args) == 2
    assert "ifqa compare: got 2 name(s) for 3 folder(s)" in capsys.readouterr().err


def find_chromium() -> str | None:
    exe = shutil.which("chromium")
    if exe is None and Path("/usr/bin/chromium").exists():
        exe = "/usr/bin/chromium"
    return exe


@pytest.mark.slow
def test_page_loads_every_image_in_chromium(tmp_path, metric):
    exe = find_chromium()
    if exe is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium)")
    levels = {
        n: {"sub dir/face é 1.png": 130 + 5 * i, "face2.jpg": 120 + 5 * i}
        for i, n in enumerate(["m 1", "m2"])
    }
    dirs = make_methods(tmp_path / "in", levels)
    (dirs[1] / "sub dir" / "face é 1.png").write_bytes(b"broken")  # one missing cell
    out = tmp_path / "report dir"
    compare(dirs, out=out, metric=metric, bootstrap=20, quiet=True)
    n_img = len(img_srcs(out / "index.html"))

    def dump(page: Path) -> str:
        cmd = [
            exe,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--virtual-time-budget=5000",
            "--dump-dom",
            page.resolve().as_uri() + "#check",
        ]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        assert res.returncode == 0, res.stderr[-2000:]
        m = re.search(r'<pre id="image-check"([^>]*)>([^<]*)</pre>', res.stdout)
        assert m, res.stdout[-2000:]
        attrs = dict(re.findall(r'data-([a-z]+)="([^"]*)"', m.group(1)))
        assert attrs.get("done") == "1", attrs
        assert int(attrs["total"]) == n_img
        return attrs["broken"] + "|" + m.group(2)

    assert dump(out / "index.html") == "0|"
    # report.html carries its pictures: copied alone to another folder, every one still loads.
    alone = tmp_path / "elsewhere" / "report.html"
    alone.parent.mkdir()
    shutil.copy(out / "report.html", alone)
    assert dump(alone) == "0|"
    # The check does see a missing file.
    gone = next((out / "heatmaps").rglob("*.jpg"))
    gone.unlink()
    broken = dump(out / "index.html")
    assert broken.startswith("1|") and gone.name in broken
    assert dump(alone) == "0|"  # and the single file does not need it


def test_single_file_report_carries_its_pictures(tmp_path, metric):
    """report.html is index.html with each picture inside as a data URI of the same bytes."""
    dirs = make_methods(tmp_path / "in", {n: {"a b/f é.png": 120 + 9 * i, "g.jpg": 130}
                                          for i, n in enumerate(["m1", "m2"])})  # fmt: skip
    out = tmp_path / "r"
    compare(dirs, out=out, metric=metric, bootstrap=20, quiet=True)
    linked, inlined = img_srcs(out / "index.html"), img_srcs(out / "report.html")
    assert len(linked) == len(inlined) == 1 + 2 * 2 * 2  # the plot, image + heatmap per cell
    for rel, uri in zip(linked, inlined, strict=True):
        mime = "image/png" if rel == "distribution.png" else "image/jpeg"
        head, data = uri.split(",", 1)
        assert head == f"data:{mime};base64", rel
        assert base64.b64decode(data) == (out / unquote(rel)).read_bytes(), rel
    strip = re.compile(r"<img [^>]*>")
    page = (out / "report.html").read_text(encoding="utf-8")
    assert strip.sub("", page) == strip.sub("", (out / "index.html").read_text(encoding="utf-8"))
    assert "rest: the face outside the eyes, nose and mouth" in page


def test_no_face_readable_everywhere(tmp_path, capsys):
    dirs = make_methods(tmp_path / "in", {"A": {"f.png": 100}, "B": {"f.png": 100}})
    (dirs[1] / "f.png").write_bytes(b"not a png")
    out = tmp_path / "r"
    args = cli_parser().parse_args(
        ["compare", *map(str, dirs), "--out", str(out), "--model", "ifqa-lite", "--device", "cpu"]
    )
    assert args.func(args) == 4
    saved = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert saved["meta"]["n_valid"] == 0 and saved["meta"]["excluded"] == ["f.png"]
    assert all(r["mean"] is None and r["wins"] == 0 for r in saved["ranking"])
    assert "cannot decode" in (out / "index.html").read_text(encoding="utf-8")
    assert (out / "distribution.png").stat().st_size > 0

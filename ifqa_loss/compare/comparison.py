"""``ifqa compare``: score several restorers' outputs of the same faces and write an HTML report.

The report folder holds ``report.html``, one file that carries its pictures inside (data URIs:
it can be sent or moved alone), and ``index.html``, the same page linking to the folder's files
instead (lighter for thousands of faces); neither loads anything from the network nor runs any
script but one small inline check. Beside them: ``distribution.png`` (when matplotlib is
installed), thumbnails under ``images/<method>/`` and heatmaps under ``heatmaps/<method>/`` (JPEG),
``results.json`` and ``results.csv``. Every file is written atomically, so a report being
rewritten is never seen half-written.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import os
import re
import sys
import unicodedata
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import numpy as np

from .._io import (
    IMAGE_EXTS,
    atomic_write,
    atomic_write_image,
    atomic_write_text,
    list_images,
    strict_json,
)
from ..files.flags import NEAR_CONSTANT, NO_FACE

REGIONS = ("eyes", "nose", "mouth", "rest")
REGIONS_NOTE = "rest: the face outside the eyes, nose and mouth (not the background)"
PAGE = "report.html"  # the report in one file: its pictures are inside it (data URIs)
LINKED_PAGE = "index.html"  # the same page, linking to the pictures in the report folder

# Two scores closer than this are a tie: each of the tied methods gets the face's win.
TIE_TOLERANCE = 1e-6
# Faces scored per call of ``score_files``: their maps are turned into heatmaps right away, so
# memory does not grow with the number of faces.
_CHUNK = 64


PLOT_HINT = 'pip install "ifqa-loss[report]"'
FLAG_NOTE = (
    "Near-constant: outputs whose luminance has a standard deviation under 2 grey levels; "
    "the model scores them like faces, so their scores mean nothing. No face: outputs the face "
    "gate (P(face) under 0.5) or --check-face calls no face (docs/robustness.md)."
)


def _have_matplotlib() -> bool:
    """Whether the optional distribution plot can be drawn (the rest of the report can)."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _slug(text: str, fallback: str, limit: int = 60) -> str:
    """A file-name-safe ASCII form of ``text`` (letters, digits, ``_`` and ``-`` only)."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    s = re.sub(r"[^A-Za-z0-9_-]+", "_", ascii_text).strip("_-")[:limit]
    return s or fallback


def _list_images(root: Path) -> set[str]:
    """Relative POSIX paths of the image files under ``root`` (hidden files and folders skipped)."""
    return {p.relative_to(root).as_posix() for p in list_images(root, ["**/*"])}


def _default_names(dirs: list[Path]) -> list[str]:
    """Folder names; where two folders share a name, their paths below the common parent."""
    names = [d.name or str(d) for d in dirs]
    if len(set(names)) == len(names):
        return names
    resolved = [d.resolve() for d in dirs]
    try:
        common = Path(os.path.commonpath(resolved))
        return [r.relative_to(common).as_posix() or r.name for r in resolved]
    except ValueError:  # different drives
        return [str(d) for d in dirs]


def _check_inputs(
    dirs: Sequence[str | os.PathLike], names: Sequence[str] | None
) -> tuple[list[Path], list[str]]:
    if isinstance(dirs, str | os.PathLike):
        raise ValueError("dirs must be a list of folders, e.g. ['gfpgan/', 'codeformer/']")
    paths = [Path(d) for d in dirs]
    if not paths:
        raise ValueError(
            "ifqa compare needs at least one folder of restored faces (one per method)"
        )
    for p in paths:
        if not p.is_dir():
            what = "is not a folder" if p.exists() else "does not exist"
            raise ValueError(f"{p} {what}: pass one folder of restored faces per method")
    if names is None:
        names = _default_names(paths)
        if len(set(names)) != len(names):
            raise ValueError(
                f"the folders give duplicate method names {names}: a folder was given twice?"
            )
    else:
        names = [str(n) for n in names]
        if len(names) != len(paths):
            raise ValueError(
                f"got {len(names)} name(s) for {len(paths)} folder(s): pass one --names entry "
                f"per folder, in the same order"
            )
        if any(not n.strip() for n in names):
            raise ValueError("method names must not be empty")
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ValueError(f"duplicate method names {dup}: each method needs its own name")
    return paths, list(names)


def _unique_slugs(texts: Sequence[str], fallback: str) -> list[str]:
    out: list[str] = []
    for t in texts:
        base = _slug(t, fallback)
        s, k = base, 2
        while s in out:
            s, k = f"{base}-{k}", k + 1
        out.append(s)
    return out


def _thumbnail(path: str, size: int, limit: dict) -> np.ndarray:
    """The image as the metric reads it (8-bit BGR), shrunk to fit a ``size`` square;
    ``limit``: the ``max_pixels`` keyword, if given."""
    import cv2

    from ..preprocess import read_image_bgr

    img = read_image_bgr(path, **limit)
    h, w = img.shape[:2]
    scale = size / max(h, w)
    if scale < 1:
        new = (max(1, round(w * scale)), max(1, round(h * scale)))
        img = cv2.resize(img, new, interpolation=cv2.INTER_AREA)
    return img


def _bootstrap_ci(
    scores: np.ndarray, n_boot: int, seed: int
) -> tuple[np.ndarray | None, np.ndarray | None]:
    """95% percentile intervals of each method's mean: (F, M) scores -> (M,) lows and highs.

    Faces are resampled together across methods (paired), with a seeded generator.
    """
    n = scores.shape[0]
    if n_boot <= 0 or n == 0:
        return None, None
    rng = np.random.default_rng(seed)
    means = np.empty((n_boot, scores.shape[1]))
    step = max(1, 2_000_000 // max(n, 1))  # bounded memory for large face sets
    for start in range(0, n_boot, step):
        stop = min(n_boot, start + step)
        idx = rng.integers(0, n, size=(stop - start, n))
        means[start:stop] = scores[idx].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5], axis=0)
    return lo, hi


def _plot_distribution(
    path: Path, names: list[str], scores: np.ndarray, model: str, seed: int
) -> None:
    """Box plot of each method's scores with the faces as jittered dots (ranking order)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    m = len(names)
    fig = Figure(figsize=(max(5.0, 2.0 + 1.2 * m), 4.5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if scores.shape[0] == 0:
        ax.text(0.5, 0.5, "no face was scored in every method", ha="center", va="center")
        ax.set_axis_off()
    else:
        # Vertical boxes (the default orientation: its keyword changed in matplotlib 3.10).
        pos = np.arange(1, m + 1)
        ax.boxplot(
            [scores[:, j] for j in range(m)],
            positions=pos,
            widths=0.5,
            showmeans=True,
            showfliers=False,
            medianprops={"color": "black"},
            meanprops={"marker": "D", "markerfacecolor": "white", "markeredgecolor": "black"},
        )
        rng = np.random.default_rng(seed)
        for j in range(m):
            jitter = rng.uniform(-0.15, 0.15, size=scores.shape[0])
            ax.scatter(pos[j] + jitter, scores[:, j], s=12, alpha=0.6, color=f"C{j % 10}")
        labels = [n if len(n) <= 20 else n[:19] + "…" for n in names]
        ax.set_xticks(pos, labels, rotation=20 if m > 4 else 0)
        ax.set_ylabel(f"IFQA score ({model})")
        ax.set_title("per-face scores, best mean on the left; higher is better", fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()

    def write(tmp: str) -> None:
        fig.savefig(tmp, format="png")

    atomic_write(path, write)


def _fmt(x: float | None, digits: int = 4) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


# Runs on load: lists images that failed to load in a marker element (used by the tests, and
# harmless for readers). With ``#check`` in the address it first loads the lazy images too.
_CHECK_SCRIPT = """
<script>
window.addEventListener("load", function () {
  var imgs = Array.prototype.slice.call(document.images);
  var full = location.hash === "#check";
  var waits = imgs.map(function (img) {
    if (img.complete || !full) return Promise.resolve();
    return new Promise(function (done) {
      img.addEventListener("load", done); img.addEventListener("error", done);
      img.loading = "eager";
    });
  });
  Promise.all(waits).then(function () {
    var broken = imgs.filter(function (i) { return i.complete && i.naturalWidth === 0; });
    var pending = imgs.filter(function (i) { return !i.complete; });
    var out = document.getElementById("image-check");
    out.setAttribute("data-total", imgs.length);
    out.setAttribute("data-broken", broken.length);
    out.setAttribute("data-pending", pending.length);
    out.textContent = broken.map(function (i) { return i.getAttribute("src"); }).join("\\n");
    out.setAttribute("data-done", "1");
  });
});
</script>
"""

_CSS = """
body { font-family: system-ui, sans-serif; margin: 1.5em; color: #222; max-width: 1400px; }
h1 { font-size: 1.5em; margin-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }
th { background: #f2f2f2; }
td.name, th.name { text-align: left; }
.meta td { text-align: left; }
.note { color: #555; font-size: 0.9em; }
.face { border-top: 1px solid #ddd; padding: 0.6em 0; }
.face h3 { font-size: 1em; margin: 0.2em 0 0.4em; word-break: break-all; }
.face.excluded h3 { color: #a00; }
.methods { display: flex; flex-wrap: wrap; gap: 0.8em; }
.method { border: 1px solid #ddd; border-radius: 4px; padding: 0.4em; }
.method .label { font-size: 0.85em; margin-bottom: 0.3em; }
.method .pair { display: flex; gap: 4px; }
.method img { width: 160px; height: auto; display: block; background: #eee; }
.best { border-color: #2a7; box-shadow: 0 0 0 2px #2a7 inset; }
.warning { color: #a00; }
.error { color: #a00; font-size: 0.85em; max-width: 324px; word-break: break-all; }
#image-check { display: none; }
"""


# ---------------------------------------------------------------------------------- the page

Src = Callable[[str], str]  # a report file's path relative to the folder -> an <img src> value
Write = Callable[[str], object]


def _linked(rel: str) -> str:
    """``index.html``'s picture source: a relative link to the file in the report folder."""
    return html.escape(quote(rel), quote=True)


def _inlined(out: Path) -> Src:
    """``report.html``'s picture sources: each file of ``out`` inside the page as a data URI."""

    def src(rel: str) -> str:
        mime = "image/jpeg" if rel.lower().endswith((".jpg", ".jpeg")) else "image/png"
        return f"data:{mime};base64,{base64.b64encode((out / rel).read_bytes()).decode('ascii')}"

    return src


def _page_top(w: Write, meta: dict) -> None:
    """The head (title, style) and the page's title and note on how to read it."""
    names = ", ".join(m["name"] for m in meta["methods"])
    w("<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n")
    w(f"<title>IFQA comparison: {html.escape(names)}</title>\n")
    w(f"<style>{_CSS}</style>\n</head>\n<body>\n")
    w("<h1>IFQA comparison of face restorations</h1>\n")
    w("<p class='note'>IFQA score: mean of the discriminator's per-pixel realness map, in [0, 1]; ")
    w("higher is better. Heatmaps: dark purple = judged fake, yellow = judged real.</p>\n")


def _meta_table(w: Write, meta: dict) -> None:
    """Model, weights, device, date, counts and version."""
    rows = [
        ("model", meta["model"]),
        ("weights", meta["weights_origin"]),
        ("device", meta["device"]),
        ("date", meta["date"]),
        ("faces compared", str(meta["n_faces"])),
        ("faces in the means", str(meta["n_valid"])),
        ("ifqa_loss version", meta["ifqa_loss_version"]),
    ]
    w("<table class='meta'>\n")
    for k, v in rows:
        w(f"<tr><th class='name'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>\n")
    w("</table>\n")


def _input_warnings(w: Write, meta: dict) -> None:
    """Faces left out (unreadable somewhere) and files not present in every folder."""
    if meta["n_excluded"]:
        w(
            f"<p class='warning'>{meta['n_excluded']} face(s) could not be read in at least one "
            "method: they are listed first below with their errors, and left out of the means, "
            "intervals, wins and plot for every method.</p>\n"
        )
    unmatched = [(m["name"], len(meta["unmatched"][m["name"]])) for m in meta["methods"]]
    if any(n for _, n in unmatched):
        w("<p class='note'>Files not present in every folder (not compared): ")
        w(", ".join(f"{html.escape(name)}: {n}" for name, n in unmatched))
        w(" (listed in results.json).</p>\n")


def _ranking_table(w: Write, summary: dict) -> None:
    """One row per method, best mean first: interval, region means, wins."""
    meta = summary["meta"]
    ci = meta["bootstrap"]
    w("<h2>Ranking</h2>\n<table class='ranking'>\n<tr><th>#</th><th class='name'>method</th>")
    w(f"<th>mean score</th><th>95% interval{' (bootstrap)' if ci else ''}</th>")
    w(
        "".join(f"<th>{r}</th>" for r in REGIONS)
        + "<th>wins</th><th>near-constant</th><th>no face</th></tr>\n"
    )
    for rank, row in enumerate(summary["ranking"], 1):
        interval = "–" if row["ci_low"] is None else f"{row['ci_low']:.4f} – {row['ci_high']:.4f}"
        w(f"<tr><td>{rank}</td><td class='name'>{html.escape(row['method'])}</td>")
        w(f"<td>{_fmt(row['mean'])}</td><td>{interval}</td>")
        w("".join(f"<td>{_fmt(row[r])}</td>" for r in REGIONS) + f"<td>{row['wins']}</td>")
        w(f"<td>{row['near_constant']}</td><td>{row['no_face']}</td></tr>\n")
    w("</table>\n")
    w(
        f"<p class='note'>Interval: percentile bootstrap over faces ({ci} resamples, seed "
        f"{meta['seed']}). Regions: template regions of FFHQ-aligned crops ({REGIONS_NOTE}). "
        "Wins: faces where the method has the highest score (ties count for each tied "
        f"method). {FLAG_NOTE}</p>\n"
        if ci
        else f"<p class='note'>No bootstrap interval (--bootstrap 0). {REGIONS_NOTE}. "
        f"{FLAG_NOTE}</p>\n"
    )


def _plot_section(w: Write, meta: dict, src: Src) -> None:
    w("<h2>Score distribution</h2>\n")
    if meta.get("plot"):
        w(f"<img class='plot' src='{src(meta['plot'])}' alt='score distribution per method'>\n")
    else:
        w(
            "<p class='note'>No plot: matplotlib is not installed where this report was made "
            f"({html.escape(PLOT_HINT)}); every score is in results.csv.</p>\n"
        )


def _face_section(w: Write, face: dict, methods: list[dict], src: Src) -> None:
    """One face: each method's output and heatmap, the face's best method outlined."""
    e = html.escape
    cls = "face excluded" if face["excluded"] else "face"
    mean = "excluded" if face["excluded"] else f"mean {_fmt(face['mean'])}"
    w(f"<section class='{cls}'>\n<h3>{e(face['face'])} <span class='note'>({mean})</span>")
    w("</h3>\n<div class='methods'>\n")
    for m in methods:
        rec = face["methods"][m["name"]]
        best = " best" if rec.get("best") else ""
        w(f"<div class='method{best}'>\n<div class='label'>{e(m['name'])}: ")
        w(f"<b>{_fmt(rec['score'])}</b></div>\n<div class='pair'>")
        alt = e(f"{m['name']}: {face['face']}", quote=True)
        if rec["image"]:
            w(f"<img src='{src(rec['image'])}' alt='{alt}' loading='lazy'>")
        if rec["heatmap"]:
            w(f"<img src='{src(rec['heatmap'])}' alt='heatmap {alt}' loading='lazy'>")
        w("</div>\n")
        if rec["error"]:
            w(f"<div class='error'>{e(rec['error'])}</div>\n")
        if rec.get("flag"):
            w(f"<div class='error'>{e(rec['flag'])}: the score means nothing</div>\n")
        w("</div>\n")
    w("</div>\n</section>\n")


def _write_page(path: Path, summary: dict, src: Src) -> Path:
    """Write the HTML page to ``path`` (atomically, streamed: a page with its pictures inside
    can be large), its pictures given by ``src``."""
    meta = summary["meta"]

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            w = f.write
            _page_top(w, meta)
            _meta_table(w, meta)
            _input_warnings(w, meta)
            _ranking_table(w, summary)
            _plot_section(w, meta, src)
            w("<h2>Faces, worst first</h2>\n")
            w("<p class='note'>Ordered by the face's mean score over the methods; the best ")
            w("method of each face is outlined. Left: the method's output; right: its ")
            w("realness map.</p>\n")
            for face in summary["faces"]:
                _face_section(w, face, meta["methods"], src)
            w("<pre id='image-check'></pre>\n")
            w(_CHECK_SCRIPT)
            w("</body>\n</html>\n")

    return atomic_write(path, write)


# ------------------------------------------------------------------------- the comparison


def _check_options(bootstrap: int, thumb_size: int) -> tuple[int, int]:
    if int(bootstrap) < 0:
        raise ValueError(f"bootstrap must be >= 0 resamples (0: no interval), got {bootstrap}")
    if int(thumb_size) < 16:
        raise ValueError(f"thumb_size must be >= 16 pixels, got {thumb_size}")
    return int(bootstrap), int(thumb_size)


def _match_files(paths: list[Path], names: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """(files present in every folder, sorted; each method's files that are not)."""
    listed = [_list_images(p) for p in paths]
    common = sorted(set.intersection(*listed))
    unmatched = {n: sorted(files - set(common)) for n, files in zip(names, listed, strict=True)}
    if not common:
        counts = ", ".join(f"{n}: {len(f)}" for n, f in zip(names, listed, strict=True))
        raise ValueError(
            f"no image file is present in every folder (image files found: {counts}); faces are "
            f"matched by their path relative to each folder, extensions {', '.join(IMAGE_EXTS)}"
        )
    return common, unmatched


def _score_method(
    metric,
    root: Path,
    common: list[str],
    out: Path,
    rels: tuple[str, str],
    thumb_size: int,
    limit: dict,
) -> list[dict]:
    """Score one method's faces (in chunks, so memory does not grow with the number of faces)
    and write each readable face's thumbnail and heatmap. ``rels``: the two files' relative
    paths with ``{}`` for the face's slug; ``limit``: the ``max_pixels`` keyword, if given.
    One record per face, in ``common``'s order."""
    import cv2

    from ..files.heatmap import overlay

    jpeg = [cv2.IMWRITE_JPEG_QUALITY, 90]  # thumbnails and heatmaps alike
    records: list[dict] = []
    for start in range(0, len(common), _CHUNK):
        chunk = common[start : start + _CHUNK]
        files = [root / f for f in chunk]
        scored = metric.score_files(files, regions=True, return_maps=True, **limit)
        for k, rec in enumerate(scored):
            slug = _face_slug(start + k, common[start + k])
            img_rel = heat_rel = None
            error = rec["error"]
            if rec["score"] is not None:
                try:
                    thumb = _thumbnail(rec["path"], thumb_size, limit)
                except (OSError, ValueError) as e:  # pragma: no cover - read twice
                    error = f"{type(e).__name__}: {e}"
                else:
                    img_rel, heat_rel = rels[0].format(slug), rels[1].format(slug)
                    atomic_write_image(out / img_rel, thumb, ".jpg", jpeg)
                    atomic_write_image(out / heat_rel, overlay(thumb, rec["map"]), ".jpg", jpeg)
            records.append(
                {
                    "score": rec["score"],
                    "error": error,
                    "flag": rec.get("flag"),
                    **{r: rec.get(r) for r in REGIONS},
                    "image": img_rel,
                    "heatmap": heat_rel,
                    "best": False,
                }
            )
    return records


def _face_slug(i: int, rel: str) -> str:
    return f"{i:05d}_{_slug(Path(rel).with_suffix('').as_posix(), 'face')}"


def _scores_and_wins(records: list[list[dict]]) -> tuple[list[int], np.ndarray, np.ndarray]:
    """(faces scored in every method, their (F, M) scores, each method's wins); marks each
    face's best method(s) (``best``) and gives every unscored record an error."""
    n_methods = len(records[0])
    valid = [f for f, recs in enumerate(records) if all(r["score"] is not None for r in recs)]
    for recs in records:
        for r in recs:
            if r["score"] is None and not r["error"]:  # pragma: no cover - defensive
                r["error"] = "not scored"
    scores = np.array([[r["score"] for r in records[f]] for f in valid], dtype=np.float64)
    scores = scores.reshape(len(valid), n_methods)
    wins = np.zeros(n_methods, dtype=int)
    for i, f in enumerate(valid):
        best = scores[i] >= scores[i].max() - TIE_TOLERANCE
        wins += best
        for j in np.flatnonzero(best):
            records[f][j]["best"] = True
    return valid, scores, wins


def _ranking(
    names: list[str],
    paths: list[Path],
    records: list[list[dict]],
    valid: list[int],
    scores: np.ndarray,
    wins: np.ndarray,
    ci: tuple[np.ndarray | None, np.ndarray | None],
) -> tuple[list[dict], list[int]]:
    """(one row per method, best mean first; the methods' indices in that order)."""
    lo, hi = ci
    rows = []
    for j, n in enumerate(names):
        row = {
            "method": n,
            "folder": str(paths[j]),
            "mean": float(scores[:, j].mean()) if valid else None,
            "ci_low": None if lo is None else float(lo[j]),
            "ci_high": None if hi is None else float(hi[j]),
        }
        for r in REGIONS:
            row[r] = float(np.mean([records[f][j][r] for f in valid])) if valid else None
        row["wins"] = int(wins[j])
        row["near_constant"] = sum(recs[j].get("flag") == NEAR_CONSTANT for recs in records)
        row["no_face"] = sum(recs[j].get("flag") == NO_FACE for recs in records)
        rows.append(row)
    order = sorted(range(len(names)), key=lambda j: (-(rows[j]["mean"] or 0.0), j))
    return [rows[j] for j in order], order


def _faces_worst_first(
    common: list[str], names: list[str], records: list[list[dict]], valid: list[int]
) -> list[dict]:
    """The faces for the page and the JSON: excluded ones first, then by mean score."""
    valid_set = set(valid)

    def face_mean(f: int) -> float | None:
        got = [r["score"] for r in records[f] if r["score"] is not None]
        return float(np.mean(got)) if got else None

    excluded = [f for f in range(len(common)) if f not in valid_set]
    return [
        {
            "face": common[f],
            "excluded": f not in valid_set,
            "mean": face_mean(f) if f in valid_set else None,
            "methods": {n: records[f][j] for j, n in enumerate(names)},
        }
        for f in excluded + sorted(valid, key=lambda f: (face_mean(f), common[f]))
    ]


def _meta(
    metric,
    common: list[str],
    faces: list[dict],
    methods: list[dict],
    unmatched: dict[str, list[str]],
    bootstrap: int,
    seed: int,
) -> dict:
    """The report's provenance, options and counts (``meta`` of results.json)."""
    from .. import __version__

    excluded = [face["face"] for face in faces if face["excluded"]]
    return {
        "model": metric.model_name,
        "weights_origin": str(metric.weights_origin),
        "device": str(metric.device),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "ifqa_loss_version": __version__,
        "n_faces": len(common),
        "n_valid": len(common) - len(excluded),
        "n_excluded": len(excluded),
        "excluded": excluded,
        "bootstrap": bootstrap,
        "seed": seed,
        "tie_tolerance": TIE_TOLERANCE,
        "methods": methods,
        "unmatched": unmatched,
        "plot": "distribution.png" if _have_matplotlib() else None,
    }


def _results_csv(summary: dict) -> str:
    """One row per face and method."""
    buf = io.StringIO()
    cols = ["face", "method", "score", "error", "flag", *REGIONS, "excluded", "image", "heatmap"]
    writer = csv.DictWriter(buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for face in summary["faces"]:
        for m in summary["meta"]["methods"]:
            rec = face["methods"][m["name"]]
            writer.writerow(
                {"face": face["face"], "method": m["name"], "excluded": face["excluded"], **rec}
            )
    return buf.getvalue()


def _write_report(out: Path, summary: dict, scores: np.ndarray, order: list[int], note) -> None:
    """Plot, CSV, JSON, then the pages: ``report.html`` (pictures inside) and ``index.html``
    (pictures linked), which comes last: once it is there, every file it links to is too."""
    meta = summary["meta"]
    if meta["plot"]:
        names = [meta["methods"][j]["name"] for j in order]
        _plot_distribution(out / meta["plot"], names, scores[:, order], meta["model"], meta["seed"])
    else:
        note(f"matplotlib is not installed: the report has no distribution plot ({PLOT_HINT})")
    atomic_write_text(out / "results.csv", _results_csv(summary))
    atomic_write_text(out / "results.json", strict_json(summary, ensure_ascii=False))
    _write_page(out / PAGE, summary, _inlined(out))
    _write_page(out / LINKED_PAGE, summary, _linked)


def compare(
    dirs: Sequence[str | os.PathLike],
    names: Sequence[str] | None = None,
    out: str | os.PathLike = "report",
    *,
    metric=None,
    model: str = "auto",
    weights=None,
    device: str | None = None,
    batch_size: int = 16,
    bootstrap: int = 2000,
    seed: int = 0,
    thumb_size: int = 256,
    quiet: bool = False,
    max_pixels: int | None = None,
) -> dict:
    """Score the same faces restored by several methods and write an HTML report to ``out``.

    Files are matched by their path relative to each folder (sub-folders included); a face is
    compared when it exists in every folder. One folder is accepted too (a report of one
    method's scores and heatmaps).

    Args:
        dirs: one folder of restored faces per method.
        names: method names (default: the folder names).
        out: report folder (created; the files the report writes are replaced atomically).
        metric: an :class:`~ifqa_loss.IFQAMetric` to use; otherwise one is built from
            ``model``, ``weights``, ``device`` and ``batch_size``.
        bootstrap: resamples of the 95% percentile bootstrap interval of each mean (0: none).
        seed: seed of the bootstrap (and of the plot's jitter).
        thumb_size: longest side of the thumbnails and heatmaps, in pixels.
        quiet: do not print the model and the unmatched files to stderr.
        max_pixels: refuse images of more pixels than this, from their headers, before
            decoding (None: the default of :meth:`~ifqa_loss.IFQAMetric.score_files`, 100
            million); a refused face is excluded like an unreadable one.

    Returns:
        The summary written to ``results.json``: ``meta`` (model, weights origin, device, date,
        counts, unmatched files per method), ``ranking`` (one dict per method, best first:
        ``method``, ``mean``, ``ci_low``, ``ci_high``, region means, ``wins``,
        ``near_constant`` and ``no_face``: how many of its outputs are flagged so,
        :mod:`ifqa_loss.files.flags`)
        and ``faces`` (worst first, with each method's score, error, flag and report files),
        plus ``out``.

    Raises:
        ValueError: no folder, a folder that does not exist, a wrong number of names, duplicate
            names, or no file present in every folder.

    Without matplotlib (``pip install "ifqa-loss[report]"``) the report is complete except
    for the distribution plot; the page says so and ``meta["plot"]`` is None.
    """
    paths, names = _check_inputs(dirs, names)
    bootstrap, thumb_size = _check_options(bootstrap, thumb_size)
    common, unmatched = _match_files(paths, names)
    if metric is None:
        from ..metric import IFQAMetric

        metric = IFQAMetric(model=model, weights=weights, device=device, batch_size=batch_size)

    def note(msg: str) -> None:
        if not quiet:
            print(f"ifqa compare: {msg}", file=sys.stderr)

    note(
        f"model {metric.model_name}, weights {metric.weights_origin}, device {metric.device}; "
        f"{len(common)} face(s) in all {len(paths)} folder(s)"
    )
    for n, files in unmatched.items():
        if files:
            note(f"{len(files)} file(s) in {n!r} are not in every folder and are not compared")

    out = Path(out)
    slugs = _unique_slugs(names, "method")
    per_method = [
        _score_method(
            metric,
            root,
            common,
            out,
            (f"images/{s}/{{}}.jpg", f"heatmaps/{s}/{{}}.jpg"),
            thumb_size,
            {} if max_pixels is None else {"max_pixels": max_pixels},
        )
        for root, s in zip(paths, slugs, strict=True)
    ]
    records = [list(recs) for recs in zip(*per_method, strict=True)]  # records[face][method]
    valid, scores, wins = _scores_and_wins(records)
    ranking, order = _ranking(
        names, paths, records, valid, scores, wins, _bootstrap_ci(scores, bootstrap, seed)
    )
    faces = _faces_worst_first(common, names, records, valid)
    methods = [
        {"name": n, "folder": str(p), "slug": s}
        for n, p, s in zip(names, paths, slugs, strict=True)
    ]
    meta = _meta(metric, common, faces, methods, unmatched, bootstrap, seed)
    summary = {"meta": meta, "ranking": ranking, "faces": faces}
    _write_report(out, summary, scores, order, note)
    summary["out"] = str(out)
    return summary

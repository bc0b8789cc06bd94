"""examples/quickstart.py, the README's first command: scores, one training step, the heatmap."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import cv2
import pytest

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "quickstart.py"


@pytest.mark.slow  # about 6 s on 2 quiet CPU cores: five 512 px faces, two loss passes
def test_quickstart_scores_steps_and_writes_the_heatmap(tmp_path, capsys):
    pytest.importorskip("skimage", reason="the sample face needs scikit-image (the examples extra)")
    spec = importlib.util.spec_from_file_location("quickstart", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    heatmap = tmp_path / "heat.png"
    scores = mod.main(["--model", "ifqa-lite", "--device", "cpu", "--heatmap", str(heatmap)])
    out = capsys.readouterr().out

    # The printed scores are the returned ones, and the clean face outscores every degradation.
    printed = dict(re.findall(r"^  (clean|blurred|noisy|JPEG q20)\s+([0-9.]+)$", out, re.M))
    assert set(printed) == set(scores) == {"clean", "blurred", "noisy", "JPEG q20"}
    for name, s in scores.items():
        assert abs(float(printed[name]) - s) < 1e-4
    assert scores["clean"] > scores["blurred"] + 0.1
    assert scores["clean"] > max(scores["noisy"], scores["JPEG q20"])

    # One step with the recommended loss lowers it.
    step = re.search(
        r"^L1 \+ 0\.5 \* IFQA features: ([0-9.]+) -> ([0-9.]+) after one step$", out, re.M
    )
    assert step and float(step[2]) < float(step[1]), out

    # A PNG of the clean and blurred faces' overlays side by side, at the face's size.
    assert heatmap.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    picture = cv2.imread(str(heatmap))
    assert picture.shape == (512, 1024, 3)
    assert str(heatmap) in out

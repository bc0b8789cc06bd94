"""examples/finetune_restorer.py runs end to end and the IFQA term changes the second branch."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "finetune_restorer.py"


@pytest.mark.slow
def test_finetune_example_runs_both_branches(tmp_path, capsys):
    pytest.importorskip(
        "skimage", reason="the default face needs scikit-image (the examples extra)"
    )
    from safetensors.torch import save_file

    from ifqa_loss import create_model

    torch.manual_seed(0)
    weights = tmp_path / "random-ifqa-lite.safetensors"
    save_file(create_model("ifqa-lite").state_dict(), str(weights))
    spec = importlib.util.spec_from_file_location("finetune_restorer", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    args = ["--model", "ifqa-lite", "--weights", str(weights), "--size", "64", "--batch", "2"]
    args += ["--warmup", "2", "--steps", "2", "--n-test", "2", "--ifqa-weight", "1.0"]
    res = mod.main(args)
    assert set(res) == {"degraded input", "ground truth", "L1", "L1 + 1*IFQA"}
    for r in res.values():
        assert math.isfinite(r["psnr"]) and 0.0 <= r["ifqa"] <= 1.0
    # Same init, same batches: only the IFQA term can make the two branches differ.
    assert res["L1"]["psnr"] != res["L1 + 1*IFQA"]["psnr"]
    out = capsys.readouterr().out
    assert "held-out evaluation" in out and "held out: the test degradations" in out

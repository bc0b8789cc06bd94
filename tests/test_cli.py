"""The ``ifqa`` command: score (exit codes, CSV/JSON), models, and the installed entry point."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from ifqa_loss.cli import EXIT_ALL_FAILED, EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE, main


@pytest.fixture
def folder(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "faces"
    d.mkdir()
    for i in range(2):
        cv2.imwrite(str(d / f"good{i}.png"), rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    return d


@pytest.mark.slow
def test_score_folder_with_a_failure(folder, cnn_ckpt, tmp_path, capsys):
    out_csv, out_json = tmp_path / "s.csv", tmp_path / "s.json"
    argv = ["score", str(folder), "--model", "ifqa", "--weights", str(cnn_ckpt), "--device", "cpu"]
    rc = main([*argv, "--csv", str(out_csv), "--json", str(out_json), "--regions"])
    assert rc == EXIT_SOME_FAILED
    text = capsys.readouterr().out
    assert text.startswith("# model: ifqa  weights: ")
    assert "scored 2 of 3 (failed 1)" in text
    with out_csv.open(newline="") as f:
        rows = list(csv.DictReader(f))  # a plain table: the header comes first
    assert list(rows[0]) == ["path", "score", "error", "flag", "eyes", "nose", "mouth", "rest"]
    assert [r["path"].split("/")[-1] for r in rows] == ["broken.png", "good0.png", "good1.png"]
    assert rows[0]["score"] == "" and "cannot decode" in rows[0]["error"]
    assert all(0 < float(r["score"]) < 1 and r["eyes"] for r in rows[1:])
    data = json.loads(out_json.read_text())
    assert data["meta"]["model"] == "ifqa" and len(data["records"]) == 3
    assert data["meta"]["weights"] == str(cnn_ckpt)  # provenance lives in the JSON


def test_csv_reads_with_pandas_and_dictreader(folder, tmp_path):
    pd = pytest.importorskip("pandas", reason="pandas is not installed (pip install pandas)")
    out_csv = tmp_path / "s.csv"
    rc = main(["score", str(folder), "--model", "ifqa-lite", "--device", "cpu", "--regions",
               "--workers", "0", "--csv", str(out_csv)])  # fmt: skip
    assert rc == EXIT_SOME_FAILED
    cols = ["path", "score", "error", "flag", "eyes", "nose", "mouth", "rest"]
    df = pd.read_csv(out_csv)
    assert list(df.columns) == cols and len(df) == 3
    assert df["score"].dtype.kind == "f" and df["score"].isna().tolist() == [True, False, False]
    assert df.loc[1:, "score"].between(0, 1).all() and df.loc[1:, "eyes"].gt(0).all()
    with out_csv.open(newline="") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
    assert reader.fieldnames == cols
    assert [Path(r["path"]).name for r in rows] == ["broken.png", "good0.png", "good1.png"]
    assert float(rows[1]["score"]) == pytest.approx(df["score"][1])


@pytest.mark.slow
def test_score_exit_codes(folder, cnn_ckpt, capsys):
    base = ["--model", "ifqa", "--weights", str(cnn_ckpt), "--device", "cpu"]
    assert main(["score", str(folder / "good0.png"), *base]) == EXIT_OK
    assert main(["score", str(folder / "broken.png"), *base]) == EXIT_ALL_FAILED
    assert main(["score", str(folder / "*.jpg"), *base]) == EXIT_USAGE
    assert "no image files found" in capsys.readouterr().err
    assert main(["score", str(folder / "good0.png"), "--model", "nope"]) == EXIT_USAGE


def test_models_lists_registry(capsys):
    assert main(["models"]) == EXIT_OK
    out = capsys.readouterr().out
    for name in ("ifqa ", "ifqa++", "ifqa-lite"):
        assert name in out


def test_console_script_installed():
    beside = Path(sys.executable).parent / "ifqa"  # the venv's bin/, also when not on PATH
    exe = str(beside) if beside.exists() else shutil.which("ifqa")
    if exe is None:
        pytest.skip("the ifqa console script is not on PATH (package not pip-installed)")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0
    assert "score" in res.stdout and "convert" in res.stdout


def _run_python(code: str) -> str:
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    return res.stdout


@pytest.mark.slow
def test_help_and_plain_import_do_not_load_torch():
    """``ifqa --help`` and ``import ifqa_loss`` stay fast: no torch, cv2 or model code."""
    heavy = ("torch", "cv2", "ifqa_loss.models", "ifqa_loss.metric", "ifqa_loss.audit")
    code = (
        "import contextlib, io, sys, ifqa_loss\n"
        "from ifqa_loss.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()) as out, contextlib.suppress(SystemExit):\n"
        "    main(['--help'])\n"
        f"print([m for m in {heavy!r} if m in sys.modules], 'audit' in out.getvalue())"
    )
    assert _run_python(code).split() == ["[]", "True"]
    # The public names still load on first use, and `python -m ifqa_loss.cli` still runs.
    code = "import ifqa_loss; print(ifqa_loss.IFQALoss.__module__, ifqa_loss.loss.__name__)"
    assert _run_python(code).split() == ["ifqa_loss.loss", "ifqa_loss.loss"]
    res = subprocess.run([sys.executable, "-m", "ifqa_loss.cli", "models"], capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert res.returncode == 0 and "ifqa-lite" in res.stdout, res.stderr


def test_each_command_keeps_its_options(capsys):
    """Only the named command's parser is filled in; each still has its own options."""
    from ifqa_loss.cli import COMMANDS, build_parser

    for name, option in [("score", "--heatmaps"), ("compare", "--bootstrap"),
                         ("audit", "--restorer-steps"), ("convert", "--model")]:  # fmt: skip
        with pytest.raises(SystemExit):
            build_parser(name).parse_args([name, "--help"])
        assert option in capsys.readouterr().out, name
    with pytest.raises(SystemExit) as e:
        main(["nope"])
    assert e.value.code == 2 and "invalid choice: 'nope'" in capsys.readouterr().err
    assert "{" + ",".join(COMMANDS) + ",train,validate}" in build_parser().format_usage()


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    from ifqa_loss._io import atomic_write, atomic_write_text

    target = tmp_path / "out.csv"
    atomic_write_text(target, "complete\n")
    mask = os.umask(0)
    os.umask(mask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~mask  # not mkstemp's owner-only 0o600

    def crash(tmp):
        with open(tmp, "w") as f:
            f.write("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert target.read_text() == "complete\n"
    assert [p.name for p in tmp_path.iterdir()] == ["out.csv"]  # no temp file left behind


def _reject_constant(token: str):
    raise ValueError(f"not JSON: {token}")


def test_strict_json_writes_no_nan_or_infinity_tokens():
    from ifqa_loss._io import strict_json

    doc = {"psnr": [float("inf"), 31.5, float("-inf")], "agree": (float("nan"), 0.5), "n": 2}
    text = strict_json(doc)
    back = json.loads(text, parse_constant=_reject_constant)  # a strict parser's view
    assert back == {"psnr": ["inf", 31.5, "-inf"], "agree": [None, 0.5], "n": 2}
    assert [float(v) for v in back["psnr"]] == [float("inf"), 31.5, float("-inf")]


def test_validate_without_faces_names_the_options(tmp_path, capsys):
    """`ifqa validate` with no faces anywhere says which option to pass, before any model."""
    assert main(["validate", "--data-root", str(tmp_path / "nowhere")]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "no faces folder: pass --data DIR" in err and "--data-root DIR" in err, err
    assert str(tmp_path / "nowhere") in err


def test_progress_bar_shows_the_rate_once_in_images_per_second(folder, capsys):
    """The bar showed tqdm's rate and a second one of its own (``2.76img/s, 2.8 img/s``)."""
    files = [str(folder / "good0.png"), str(folder / "good1.png")]
    assert main(["score", *files, "--model", "ifqa-lite", "--device", "cpu", "--progress"]) == 0
    last = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert "2/2" in last and last.count("img/s") == 1 and "s/img" not in last, last


def test_missing_paths_are_reported_before_the_model_loads(folder, monkeypatch, capsys):
    """A mistyped folder used to load the model, then say 'no such image file'."""
    import ifqa_loss.cli.score as score

    def no_model(*a, **k):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(score, "_build_metric", no_model)
    typo = str(folder.parent / "facse")
    assert main(["score", typo, "--model", "ifqa-lite"]) == EXIT_USAGE
    err = capsys.readouterr().err
    assert f"no such file or folder: {typo} (nothing to score)" in err, err
    monkeypatch.undo()
    rc = main(["score", typo, str(folder / "good0.png"), "--model", "ifqa-lite"])
    assert rc == EXIT_SOME_FAILED
    captured = capsys.readouterr()
    assert f"no such file or folder: {typo} (reported as failed)" in captured.err
    assert f"{typo}\tERROR" in captured.out


def test_a_type_error_inside_a_command_is_a_bug_not_a_usage_error(tmp_path, monkeypatch, capsys):
    """Only bad input (and argparse's own usage errors) exit with 2; a TypeError raised by the
    code of a command propagates with its traceback instead of passing for a usage error."""
    import ifqa_loss.cli.models as models

    def broken(args):
        raise TypeError("unsupported operand type(s) for +: 'int' and 'str'")

    monkeypatch.setattr(models, "cmd_models", broken)
    with pytest.raises(TypeError, match="unsupported operand"):
        main(["models"])
    assert "ifqa models:" not in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["models", "--no-such-option"])
    assert usage.value.code == EXIT_USAGE


def test_auto_fallback_is_said_once_in_the_model_line(
    folder, tmp_path, monkeypatch, caplog, capsys
):
    """``--model auto`` without the original weights: the '# model:' line says so, and the
    library's warning (printed beside it on every command before) is not repeated."""
    import logging

    from ifqa_loss import IFQAMetric, weights
    from ifqa_loss.weights import ENV_VAR

    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(weights, "_ANNOUNCED", set())
    with caplog.at_level(logging.INFO, logger="ifqa_loss"):
        assert main(["score", str(folder / "good0.png"), "--device", "cpu"]) == EXIT_OK
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("# model: ifqa-lite  weights: ") and "(auto: the original IFQA" in line
    assert "original IFQA weights not found" not in caplog.text
    # Only for the command: the library still warns its own users.
    monkeypatch.setattr(weights, "_ANNOUNCED", set())
    with caplog.at_level(logging.WARNING, logger="ifqa_loss"):
        IFQAMetric(device="cpu")
    assert "original IFQA weights not found" in caplog.text


def test_trainer_commands_take_their_own_options_after_the_verbose_flag(capsys):
    """`ifqa -v validate --help` reached the trainer's parser only without the -v."""
    for argv in (["validate", "--help"], ["-v", "validate", "--help"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code == 0
        assert capsys.readouterr().out.startswith("usage: ifqa validate"), argv

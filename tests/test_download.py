"""Downloading the official weights on first use, without the network: a loopback HTTP server
stands in for a mirror (``IFQA_WEIGHTS_URL``) and a fake ``gdown`` for Google Drive.

A small registered model (``tiny-dl``, an ``IFQACNN`` of width 0.05 at 96 px, about 1 MB)
plays the part of ``ifqa``."""

from __future__ import annotations

import http.server
import io
import logging
import os
import subprocess
import sys
import threading
import time
import types
from functools import partial
from pathlib import Path

import pytest
import torch

from ifqa_loss import IFQAAdversarialLoss, IFQALoss, IFQAMetric, create_model, weights
from ifqa_loss.cli import EXIT_ALL_FAILED, EXIT_OK, EXIT_USAGE, main
from ifqa_loss.models import IFQACNN, registry
from ifqa_loss.models.registry import CNN_DRIVE_ID, ModelConfig
from ifqa_loss.weights import (
    CheckpointError,
    DownloadError,
    download_weights,
    load_discriminator,
    sha256sum,
)

REPO = Path(__file__).resolve().parent.parent
NAME, FILE, DRIVE_ID = "tiny-dl", "tiny-dl.pth", "FAKE-DRIVE-ID-0123"


def tiny_config() -> ModelConfig:
    return ModelConfig(
        name=NAME,
        builder=partial(IFQACNN, width=0.05, native_size=96),
        native_size=96,
        interpolation="bilinear",
        weight_file=FILE,
        source="a test model",
        drive_id=DRIVE_ID,
    )


def _checkpoint(width: float = 0.05, seed: int = 0) -> bytes:
    torch.manual_seed(seed)
    buf = io.BytesIO()
    torch.save({"D": IFQACNN(width=width, native_size=96).state_dict()}, buf)
    return buf.getvalue()


GOOD = _checkpoint()
HTML = b"<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head></html>"


@pytest.fixture
def cache(tmp_path, monkeypatch) -> Path:
    """The tiny model registered, an empty cache and working folder, downloads allowed."""
    monkeypatch.setitem(registry._REGISTRY, NAME, tiny_config())
    monkeypatch.delenv(weights.ENV_VAR, raising=False)
    monkeypatch.delenv("IFQA_OFFLINE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    return tmp_path / "xdg" / "ifqa_loss"


class Server:
    """A loopback HTTP server: ``routes[path] = body``; ``hits[path]`` counts the GETs;
    ``short`` paths announce their full length but send half; ``delay_s`` before answering."""

    def __init__(self) -> None:
        self.routes: dict[str, bytes] = {}
        self.hits: dict[str, int] = {}
        self.short: set[str] = set()
        self.delay_s = 0.0
        lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with lock:
                    outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                time.sleep(outer.delay_s)
                body = outer.routes.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                html = body.lstrip().startswith(b"<")
                self.send_response(200)
                self.send_header(
                    "Content-Type", "text/html" if html else "application/octet-stream"
                )
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in outer.short else body)

            def log_message(self, *args) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def total(self) -> int:
        return sum(self.hits.values())


@pytest.fixture
def server(monkeypatch):
    s = Server()
    s.routes = {
        f"/good/{FILE}": GOOD,
        f"/truncated/{FILE}": GOOD[: len(GOOD) // 3],
        f"/html/{FILE}": HTML,
        f"/wrong/{FILE}": _checkpoint(width=0.1),
        f"/short/{FILE}": GOOD,
    }
    s.short = {f"/short/{FILE}"}
    monkeypatch.setenv("IFQA_WEIGHTS_URL", s.base + "/good")
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def _left(cache: Path) -> list[str]:
    """Weight and temporary files in the cache folder (the lock file aside)."""
    if not cache.is_dir():
        return []
    return sorted(p.name for p in cache.iterdir() if not p.name.endswith(".lock"))


def _same_as_good(net: torch.nn.Module) -> None:
    sd = torch.load(io.BytesIO(GOOD), weights_only=True)["D"]
    assert all(torch.equal(v, sd[k]) for k, v in net.state_dict().items())


def test_first_use_downloads_once_from_the_mirror(cache, server, capfd):
    net = load_discriminator(NAME)
    _same_as_good(net)
    assert net.weights_origin == str((cache / FILE).resolve())
    assert server.hits == {f"/good/{FILE}": 1}
    assert _left(cache) == [FILE, FILE + ".sha256"]
    digest = sha256sum(cache / FILE)
    assert (cache / (FILE + ".sha256")).read_text() == f"{digest}  {FILE}\n"  # sha256sum -c
    err = capfd.readouterr().err
    assert "B/s" not in err and "%|" not in err  # no progress bar when stderr is no terminal
    load_discriminator(NAME)
    assert server.total() == 1  # found in the cache: no second download


@pytest.mark.parametrize(
    "make",
    [
        partial(create_model, NAME, pretrained=True),
        partial(IFQAMetric, model=NAME, device="cpu"),
        partial(IFQALoss, model=NAME, device="cpu"),
        partial(IFQAAdversarialLoss, model=NAME),
    ],
    ids=["create_model", "IFQAMetric", "IFQALoss", "IFQAAdversarialLoss"],
)
def test_every_entry_point_downloads_a_named_model(cache, server, make):
    make()
    assert server.total() == 1 and (cache / FILE).is_file()


def test_progress_bar_on_request(cache, server, capfd):
    download_weights(NAME, progress=True)
    err = capfd.readouterr().err
    assert FILE in err and "B/s" in err  # tqdm: name, size and rate


@pytest.mark.parametrize(
    "route, expected",
    [
        (
            "truncated",
            r"is not a checkpoint of model .tiny-dl.: 365,017 bytes, the start of a zip archive",
        ),
        (
            "html",
            r"is an HTML page, not a checkpoint \(85 bytes, an HTML page titled 'Google Drive",
        ),
        ("wrong", r"is not a checkpoint of model 'tiny-dl': 4,\d{3},\d{3} bytes, a zip archive"),
    ],
)
def test_bad_downloads_leave_nothing(cache, server, monkeypatch, route, expected):
    monkeypatch.setenv("IFQA_WEIGHTS_URL", f"{server.base}/{route}")
    with pytest.raises(CheckpointError, match=expected) as e:
        load_discriminator(NAME)
    msg = str(e.value)
    assert f"{server.base}/{route}/{FILE}" in msg and "starting b'" in msg
    assert f"Nothing was kept in {cache}" in msg
    assert f"To download it by hand: https://drive.google.com/uc?id={DRIVE_ID}" in msg
    assert _left(cache) == []
    print(msg)  # pytest -s shows the messages


def test_cut_transfer_and_http_error_leave_nothing(cache, server, monkeypatch):
    monkeypatch.setenv("IFQA_WEIGHTS_URL", f"{server.base}/short")
    with pytest.raises(DownloadError, match=r"stopped after 547,525 of 1,095,051 bytes"):
        load_discriminator(NAME)
    assert _left(cache) == []
    monkeypatch.setenv("IFQA_WEIGHTS_URL", f"{server.base}/missing")
    with pytest.raises(DownloadError, match="answered HTTP 404") as e:
        load_discriminator(NAME)
    assert f"Searched:\n  - {Path.cwd() / 'weights' / FILE}" in str(e.value)
    assert isinstance(e.value, FileNotFoundError)  # as before downloads existed
    assert _left(cache) == []


CHILD = r"""
import pathlib, sys, time
from functools import partial
from ifqa_loss.models import IFQACNN
from ifqa_loss.models.registry import ModelConfig, register_model
from ifqa_loss.weights import download_weights

register_model(ModelConfig(name="tiny-dl", builder=partial(IFQACNN, width=0.05, native_size=96),
    native_size=96, interpolation="bilinear", weight_file="tiny-dl.pth", source="test",
    drive_id="FAKE-DRIVE-ID-0123"))
ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
ready.touch()
while not go.exists():
    time.sleep(0.01)
print(download_weights("tiny-dl", progress=False))
"""


@pytest.mark.slow
def test_two_processes_download_once(cache, server, tmp_path):
    server.delay_s = 1.5  # the second process reaches the lock while the first downloads
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, str(tmp_path / f"ready{i}"), str(go)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs)
        time.sleep(0.05)
    go.touch()
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert {o.strip() for o, _ in outs} == {str(cache / FILE)}
    assert server.hits == {f"/good/{FILE}": 1}  # exactly one full download
    assert any("waiting for another process" in e for _, e in outs)
    assert _left(cache) == [FILE, FILE + ".sha256"]


def _fake_gdown(monkeypatch, body: bytes, calls: list) -> None:
    def download(url=None, output=None, quiet=False, id=None, resume=False, **kw):
        calls.append({"id": id, "output": output, "quiet": quiet, "resume": resume, **kw})
        Path(output).write_bytes(body)
        return output

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=download))


def test_google_drive_through_gdown(cache, monkeypatch):
    calls: list = []
    _fake_gdown(monkeypatch, GOOD, calls)
    path = download_weights(NAME, progress=False)
    assert path == cache / FILE and _left(cache) == [FILE, FILE + ".sha256"]
    [call] = calls
    tmp = Path(call["output"])
    assert call["id"] == DRIVE_ID and call["resume"] is True and call["quiet"] is True
    assert tmp.parent == cache and tmp.name.startswith(".") and tmp.name != FILE
    (cache / FILE).unlink()
    download_weights(NAME, progress=True)
    assert calls[1]["quiet"] is False  # gdown's progress bar


def test_google_drive_quota_page_leaves_nothing(cache, monkeypatch):
    _fake_gdown(monkeypatch, HTML, [])
    with pytest.raises(CheckpointError, match="Google Drive file id FAKE-DRIVE-ID-0123 is an HTML"):
        load_discriminator(NAME)
    assert _left(cache) == []

    def fails(**kw):
        raise RuntimeError("Too many users have viewed or downloaded this file recently.")

    monkeypatch.setitem(sys.modules, "gdown", types.SimpleNamespace(download=fails))
    with pytest.raises(DownloadError, match="RuntimeError: Too many users"):
        load_discriminator(NAME)
    assert _left(cache) == []


def test_offline_refuses_with_instructions(cache, server, monkeypatch):
    monkeypatch.setenv("IFQA_OFFLINE", "1")
    with pytest.raises(DownloadError, match=r"downloads are off \(\$IFQA_OFFLINE=1\)") as e:
        load_discriminator(NAME)
    msg = str(e.value)
    assert f"uc?id={DRIVE_ID}" in msg and f"put {FILE} in {cache}" in msg
    assert server.total() == 0 and _left(cache) == []
    with pytest.raises(DownloadError, match=CNN_DRIVE_ID):
        load_discriminator("ifqa")
    assert main(["download", "ifqa"]) == EXIT_ALL_FAILED


def test_auto_never_downloads(cache, server, monkeypatch, caplog):
    def no(*a, **kw):
        raise AssertionError("model='auto' must not download")

    monkeypatch.setattr(weights, "fetch", no)
    monkeypatch.setattr(weights, "download_weights", no)
    monkeypatch.setattr(weights, "_ANNOUNCED", set())
    with caplog.at_level(logging.WARNING, logger="ifqa_loss"):
        metric = IFQAMetric(device="cpu")
    assert metric.model_name == "ifqa-lite"
    assert "`ifqa download ifqa`" in caplog.text
    assert server.total() == 0 and _left(cache) == []


def test_a_changed_cache_file_is_refused(cache, server):
    download_weights(NAME, progress=False)
    (cache / FILE).write_bytes(_checkpoint(seed=1))  # loads, but is not what was downloaded
    with pytest.raises(CheckpointError, match="changed since it was downloaded") as e:
        load_discriminator(NAME)
    assert str(cache / FILE) in str(e.value) and str(cache / (FILE + ".sha256")) in str(e.value)
    assert load_discriminator(NAME, verify=False)  # on request, as it is
    print(e.value)


def test_cli_download_and_models(cache, server, capsys):
    assert main(["download", NAME, "--no-progress"]) == EXIT_OK
    digest = sha256sum(cache / FILE)
    assert capsys.readouterr().out == f"{NAME}: downloaded {cache / FILE}  sha256 {digest}\n"
    assert main(["download", "all"]) != EXIT_OK  # ifqa and ifqa++ are not on the mirror
    assert f"{NAME}: found {cache / FILE}" in capsys.readouterr().out
    assert server.total() == 3
    assert main(["download", "ifqa-lite"]) == EXIT_USAGE  # bundled: nothing to download
    assert "the downloadable models are" in capsys.readouterr().err
    assert main(["models"]) == EXIT_OK
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(NAME))
    assert line.endswith(f"{cache / FILE}  sha256 {digest}")

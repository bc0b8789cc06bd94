"""The package's doctests run with the tests; a module whose optional extra is missing is skipped
with the reason, and any other import error still fails (the repository-root conftest.py)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# A pytest plugin that makes modules unimportable, as if they were not installed.
HIDE_PLUGIN = """
import os, sys
for name in os.environ["HIDE_MODULES"].split(","):
    sys.modules[name] = None
"""


def _root_conftest():
    spec = importlib.util.spec_from_file_location("root_conftest", REPO / "conftest.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _collect(tmp_path: Path, hide: str, *paths: str) -> subprocess.CompletedProcess:
    """``pytest --collect-only -rs PATHS`` in a subprocess with the modules ``hide`` missing."""
    (tmp_path / "hide_modules.py").write_text(HIDE_PLUGIN)
    env = dict(os.environ, HIDE_MODULES=hide)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(tmp_path), str(REPO), env.get("PYTHONPATH")) if p
    )
    cmd = [sys.executable, "-m", "pytest", "-p", "hide_modules", "-p", "no:cacheprovider"]
    cmd += ["--collect-only", "-q", "-rs", *paths]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_quick_run_collects_the_package_doctests():
    cfg = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    assert "ifqa_loss" in cfg["testpaths"]
    assert "--doctest-modules" in cfg["addopts"].split()


def test_missing_extra_is_skipped_with_its_reason(tmp_path):
    files = ["ifqa_loss/integrations/basicsr.py", "ifqa_loss/integrations/torchmetrics.py"]
    files.append("ifqa_loss/integrations/pyiqa.py")
    res = _collect(tmp_path, "basicsr,torchmetrics,pyiqa", *files, "ifqa_loss/masks.py")
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    assert "error" not in out.lower(), out
    skipped = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert len(skipped) == 3, out
    assert "ifqa_loss/integrations/basicsr.py: needs basicsr: pip install" in skipped[0]
    assert "'ifqa-loss[basicsr]'" in skipped[0]
    assert skipped[1].endswith(
        "ifqa_loss/integrations/torchmetrics.py: needs torchmetrics: "
        "pip install 'ifqa-loss[torchmetrics]'"
    )
    assert skipped[2].endswith(
        "ifqa_loss/integrations/pyiqa.py: needs pyiqa: pip install 'ifqa-loss[pyiqa]'"
    )
    # The other modules' examples are still collected (through addopts' --doctest-modules).
    assert "ifqa_loss/masks.py::ifqa_loss.masks.face_region_masks" in out


def test_other_import_errors_still_fail(tmp_path):
    # kornia is a required dependency: its absence is a broken install, not a missing extra.
    res = _collect(tmp_path, "kornia", "ifqa_loss/masks.py")
    out = res.stdout + res.stderr
    assert res.returncode != 0, out
    assert "ERROR collecting ifqa_loss/masks.py" in out
    assert "SKIPPED" not in out


def test_only_the_optional_module_itself_counts():
    missing_optional_module = _root_conftest().missing_optional_module

    def raised(name: str, wrap: bool) -> BaseException:
        try:
            try:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
            except ImportError as e:
                if wrap:  # the package's own message, as ifqa_loss.integrations raise it
                    raise ImportError("needs the extra: pip install ...") from e
                raise
        except ImportError as e:
            return e

    assert missing_optional_module(raised("basicsr", wrap=True)) == "basicsr"
    assert missing_optional_module(raised("basicsr.utils", wrap=False)) == "basicsr"
    assert missing_optional_module(raised("dlib", wrap=True)) == "dlib"
    # Installed but broken: basicsr failing on a module torchvision removed is an error.
    assert missing_optional_module(raised("torchvision.transforms.x", wrap=True)) is None
    assert missing_optional_module(raised("kornia", wrap=False)) is None
    assert missing_optional_module(RuntimeError("not an import error")) is None

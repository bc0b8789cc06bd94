"""Doctest collection of the package: a module that needs a missing optional extra is skipped.

``--doctest-modules`` (pyproject.toml's addopts) imports every module of ``ifqa_loss`` to find
its examples. A module that imports an optional dependency (``ifqa_loss.integrations.basicsr``
needs basicsr, ``ifqa_loss.integrations.torchmetrics`` needs torchmetrics, ...) cannot be
imported without it: it is reported as skipped, with the extra that installs it. Any other
import error, including one raised inside an installed optional dependency, stays a collection
error. Doctests are collected from the package only (the test files hold no examples), and a
package module named on the command line is collected for its doctests only (the package holds
no test functions).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _pytest.doctest import DoctestModule

PACKAGE = Path(__file__).resolve().parent / "ifqa_loss"

# Top-level module name -> how to install it (setup.cfg's extras; dlib comes as dlib-bin).
OPTIONAL_MODULES = {
    "basicsr": "pip install --no-build-isolation 'ifqa-loss[basicsr]'",
    "torchmetrics": "pip install 'ifqa-loss[torchmetrics]'",
    "pyiqa": "pip install 'ifqa-loss[pyiqa]'",
    "dlib": "pip install 'ifqa-loss[align]'",
    "face_recognition_models": "pip install 'ifqa-loss[align]'",
    "piq": "pip install 'ifqa-loss[judges]'",
    "brisque": "pip install 'ifqa-loss[judges]'",
    "matplotlib": "pip install 'ifqa-loss[report]'",
    "skimage": "pip install 'ifqa-loss[examples]'",
    "scipy": "pip install 'ifqa-loss[test]'",
    "timm": "pip install 'ifqa-loss[test]'",
    "pandas": "pip install 'ifqa-loss[test]'",
}


def missing_optional_module(err: BaseException) -> str | None:
    """The optional dependency whose absence caused ``err``, or None.

    Follows the chain of causes: the package re-raises a missing dependency's ImportError with
    its own install hint, and pytest wraps import errors in a collection error.
    """
    seen: set[int] = set()
    e: BaseException | None = err
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, ImportError) and e.name:
            top = e.name.partition(".")[0]
            return top if top in OPTIONAL_MODULES else None
        e = e.__cause__ or e.__context__
    return None


def skip_reason(module_path: Path, err: BaseException) -> str | None:
    """``"<file>: needs <module>: <install command>"`` when ``err`` is a missing extra."""
    name = missing_optional_module(err)
    if name is None:
        return None
    where = module_path.relative_to(PACKAGE.parent).as_posix()
    return f"{where}: needs {name}: {OPTIONAL_MODULES[name]}"


class OptionalExtraDoctestModule(DoctestModule):
    """A package module's doctests, skipped with the reason when an optional extra is missing."""

    def collect(self) -> Iterator:
        try:
            yield from super().collect()
        except (ImportError, pytest.Collector.CollectError) as err:
            reason = skip_reason(self.path, err)
            if reason is None:
                raise
            pytest.skip(reason)


@pytest.hookimpl(hookwrapper=True)
def pytest_collect_file(file_path: Path, parent: pytest.Collector):
    outcome = yield
    in_package = file_path.resolve().is_relative_to(PACKAGE)
    collectors = []
    for c in outcome.get_result():
        if type(c) is DoctestModule:
            if not in_package:
                continue  # test files and scripts: no examples, and importing twice repeats skips
            c = OptionalExtraDoctestModule.from_parent(parent, path=file_path)
        elif in_package and type(c) is pytest.Module:
            continue  # a package file named on the command line: no test functions to collect
        collectors.append(c)
    outcome.force_result(collectors)

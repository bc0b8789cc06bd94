"""The package's import graph, read from the source: a core that imports no tool, imports that
run one way and never in a circle, optional frameworks only in their integrations."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parent.parent / "ifqa_loss"
# The core: what a user of the loss, the metric and the GAN term needs. It imports nothing
# from the tools around it, so it can be read (and used) alone.
CORE = ("", "_holder", "_io", "download", "models", "weights", "preprocess", "regions", "masks")
CORE += ("gate", "loss", "metric", "adversarial", "balance", "files", "align", "samples")
# The tools: commands, the compare report, the audit, the trainer and the framework glue.
TOOLS = ("cli", "compare", "faces", "audit", "train", "integrations")
# Within the core, the base knows nothing of the modules built on it.
BASE = ("download", "models", "weights", "preprocess", "regions", "masks", "gate", "_io")
ABOVE = ("loss", "metric", "adversarial", "files")
# Optional frameworks: only their integration modules import them.
FRAMEWORKS = ("basicsr", "gfpgan", "pyiqa", "lightning", "pytorch_lightning", "torchmetrics")


def _modules() -> dict[str, Path]:
    """Dotted name (without the ``ifqa_loss.`` prefix; "" for the package) -> file."""
    out = {}
    for f in sorted(PKG.rglob("*.py")):
        parts = list(f.relative_to(PKG).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def _imported(node: ast.AST, here: list[str]) -> list[str]:
    """Absolute dotted names an import statement in package ``here`` may refer to (a module,
    or a module's attribute: ``from .x import y`` gives ``x`` and ``x.y``)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = (node.module or "").split(".")
    if node.level:
        base = ["ifqa_loss", *here[: len(here) - node.level + 1], *base]
    base = [p for p in base if p]
    return [".".join(base), *(".".join([*base, a.name]) for a in node.names)]


def _imports(name: str, f: Path, mods: dict[str, Path], top_level_only: bool) -> set[str]:
    """The package's modules that ``name`` imports (inside functions too, unless told)."""
    tree = ast.parse(f.read_text(encoding="utf-8"))
    here = name.split(".") if name else []
    if f.name != "__init__.py":
        here = here[:-1]
    found = set()
    for node in tree.body if top_level_only else ast.walk(tree):
        for t in _imported(node, here):
            if t != "ifqa_loss" and not t.startswith("ifqa_loss."):
                continue
            t = t.removeprefix("ifqa_loss").lstrip(".")
            while t not in mods and "." in t:
                t = t.rsplit(".", 1)[0]
            if t in mods and t != name:
                found.add(t)
    return found


def _under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def _edges(sources: tuple[str, ...], targets: tuple[str, ...]) -> list[str]:
    mods = _modules()
    return [
        f"{m} -> {t}"
        for m, f in mods.items()
        if _under(m, sources)
        for t in _imports(m, f, mods, top_level_only=False)
        if _under(t, targets)
    ]


def test_every_module_is_core_or_a_tool():
    assert [m for m in _modules() if not _under(m, CORE + TOOLS)] == []


def test_the_core_imports_no_tool():
    assert _edges(CORE, TOOLS) == []
    # The graph was read: known edges are there, a lazy import (inside a function) included.
    mods = _modules()
    assert {"masks", "preprocess"} <= _imports("loss", mods["loss"], mods, top_level_only=True)
    assert "files.scoring" in _imports("metric", mods["metric"], mods, top_level_only=False)
    assert "metric" in _imports("cli.score", mods["cli.score"], mods, top_level_only=False)


def test_the_base_imports_nothing_built_on_it():
    assert _edges(BASE, ABOVE) == []


def test_the_audit_and_the_trainer_do_not_import_each_other():
    assert _edges(("audit",), ("train",)) == []
    assert _edges(("train",), ("audit",)) == []


def test_no_import_cycle_at_module_level():
    mods = _modules()
    graph = {m: _imports(m, f, mods, top_level_only=True) for m, f in mods.items()}
    done: set[str] = set()

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            raise AssertionError("import cycle: " + " -> ".join([*path[path.index(m) :], m]))
        if m in done:
            return
        for t in sorted(graph[m]):
            visit(t, [*path, m])
        done.add(m)

    for m in sorted(graph):
        visit(m, [])


def test_only_integrations_import_the_frameworks():
    users = sorted(
        f"{f.relative_to(PKG)}: {n}"
        for f in PKG.rglob("*.py")
        if "integrations" not in f.relative_to(PKG).parts
        for node in ast.walk(ast.parse(f.read_text(encoding="utf-8")))
        for n in _imported(node, ["?"])
        if n.split(".")[0] in FRAMEWORKS
    )
    assert users == []

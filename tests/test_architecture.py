"""The layering the docs promise (docs/architecture.md), checked on the source itself.

* no module imports another module's private (``_name``) names — tests included;
* no core module imports ``odezoo.experiments``, and ``import odezoo`` loads none of the
  experiment toolkit's heavy dependencies;
* ``odezoo.experiments`` without its extra fails with one message naming the extra.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE_DIRS = ("odezoo", "plugins", "recipes", "benchmarks", "tests")
#: The one private module other core modules may import: the only place that touches
#: torchdiffeq's internals (docs/architecture.md).  Its tests import it too.
PRIVATE_MODULES_ALLOWED = {"_torchdiffeq_bridge"}
HEAVY = ("odezoo.experiments", "torchvision", "matplotlib", "advertorch", "yaml", "mlxtend", "torchattacks")
#: Modules of this repository (the package, the plugins, script modules imported by tests).
PROJECT_MODULES = ("odezoo", "odezoo_rk3w", "odezoo_bs32", "train", "evaluate", "reproduce", "demo",
                   "cases", "problems", "run")


def python_files(*dirs):
    for top in dirs:
        yield from sorted((ROOT / top).rglob("*.py"))


def imported_names(tree):
    """(module, name, line) for every ``from module import name`` and ``import module``."""
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            for alias in node.names:
                yield module, alias.name, node.lineno
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, None, node.lineno


def private_imports(path: Path) -> list[str]:
    hits = []
    for module, name, line in imported_names(ast.parse(path.read_text(), str(path))):
        if not (module.startswith(".") or module.split(".")[0] in PROJECT_MODULES):
            continue  # third-party internals: only the bridge touches torchdiffeq's, by design
        parts = [p for p in module.split(".") if p] + ([name] if name else [])
        private = [p for p in parts if p.startswith("_") and not p.startswith("__")
                   and p not in PRIVATE_MODULES_ALLOWED]
        if private:
            where = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name
            hits.append(f"{where}:{line}: {module} {name or ''}".rstrip())
    return hits


def test_the_checker_sees_a_private_import(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("from odezoo.family import _tableau\nfrom .x import _y\nimport odezoo._secret\n"
                   "from odezoo import _torchdiffeq_bridge\nfrom torch._C import _x\nfrom odezoo import families\n")
    assert [hit.split(": ", 1)[1] for hit in private_imports(bad)] == [
        "odezoo.family _tableau", ".x _y", "odezoo._secret"]


def test_no_module_imports_a_private_name():
    hits = [hit for path in python_files(*SOURCE_DIRS) for hit in private_imports(path)]
    assert not hits, "private names imported across modules:\n" + "\n".join(hits)


def test_core_modules_never_import_the_experiment_toolkit():
    core = [p for p in python_files("odezoo") if "experiments" not in p.relative_to(ROOT / "odezoo").parts]
    assert core, "no core modules found"
    hits = []
    for path in core:
        for module, name, line in imported_names(ast.parse(path.read_text())):
            text = f"{module}.{name}" if name else module
            if "experiments" in text or text.split(".")[0].lstrip(".") in HEAVY[1:]:
                hits.append(f"{path.relative_to(ROOT)}:{line}: {text}")
    assert not hits, "core modules import the toolkit or its dependencies:\n" + "\n".join(hits)


def _core_modules():
    """Core modules (``odezoo/*.py``, not the families, the toolkit or the package's __init__), by name."""
    return {p.stem: p for p in (ROOT / "odezoo").glob("*.py") if p.stem not in ("__init__", "__main__")}


def _module_level_imports(path):
    """The odezoo modules a module imports at its top level (not inside functions)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = ("odezoo." if node.level else "") + (node.module or "")
            if node.level or (node.module or "").startswith("odezoo"):
                found.add(base.rstrip("."))
                found.update(f"{base.rstrip('.')}.{a.name}".replace("odezoo..", "odezoo.") for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("odezoo"))
    return found


def test_the_core_never_imports_a_family_or_an_example():
    hits = []
    for name, path in _core_modules().items():
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([node.module or ""] if isinstance(node, ast.ImportFrom) else
                     [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            for imported in names:
                if "families" in imported.split(".") or imported.split(".")[0] in ("odezoo_rk3w", "odezoo_bs32"):
                    hits.append(f"odezoo/{name}.py:{node.lineno}: {imported}")
    assert not hits, "the core imports a family or an example plugin:\n" + "\n".join(hits)


def test_no_core_module_imports_one_that_depends_on_it():
    """The core's top-level imports form no cycle: each module depends only on modules below it."""
    modules = _core_modules()
    graph = {name: {i.split(".")[1] for i in _module_level_imports(path)
                    if i.startswith("odezoo.") and len(i.split(".")) > 1 and i.split(".")[1] in modules} - {name}
             for name, path in modules.items()}
    state = {}

    def visit(name, trail):
        if state.get(name) == "done":
            return
        assert state.get(name) != "open", "import cycle: " + " -> ".join(trail + [name])
        state[name] = "open"
        for other in sorted(graph[name]):
            visit(other, trail + [name])
        state[name] = "done"

    for name in sorted(graph):
        visit(name, [])


def test_import_odezoo_loads_no_heavy_dependency():
    code = ("import sys, odezoo; "
            f"print(sorted({{m.split('.')[0] if not m.startswith('odezoo.') else m for m in sys.modules "
            f"if m.startswith({HEAVY!r})}}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout


def test_experiments_without_the_extra_names_the_install_line():
    # Make one dependency of the extra unimportable: the package must refuse with one clear line.
    code = ("import sys; sys.modules['mlxtend'] = None; "
            "import importlib.util as u; real = u.find_spec; "
            "u.find_spec = lambda name, *a: None if name == 'mlxtend' else real(name, *a); "
            "import odezoo.experiments")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert "ImportError" in last and "pip install 'odezoo[recipes]'" in last and "mlxtend" in last, last


def test_experiments_declares_its_public_names():
    pytest.importorskip("odezoo.experiments")
    import odezoo.experiments as ex

    for name in ex.__all__:
        assert hasattr(ex, name), name
    for module in ("attacks", "config", "data", "evaluation", "io", "masking", "models", "plots", "protocol", "sweep",
                   "training"):
        sub = getattr(ex, module)
        assert sub.__all__ and all(hasattr(sub, n) for n in sub.__all__), module


def test_recipes_without_the_extra_stop_with_the_install_line():
    """A command run without the recipes extra stops with the install line (its --help needs no
    extra).  One interpreter without mlxtend runs every recipe in turn (a failed import leaves
    nothing behind, so each meets the missing extra afresh), paying for torch once."""
    cases = [("evaluate.py", ["x.pt"]), ("demo.py", ["--dry-run"]), ("train.py", ["--defaults"]),
             ("reproduce.py", ["fig5"]), ("sweep.py", ["--grid", "seed=0"])]
    code = ("import contextlib, io, json, runpy, sys; sys.modules['mlxtend'] = None\n"
            "import importlib.util as u; real = u.find_spec\n"
            "u.find_spec = lambda name, *a: None if name == 'mlxtend' else real(name, *a)\n"
            "seen = {}\n"
            f"for script, argv in {cases!r}:\n"
            "    err, sys.argv = io.StringIO(), [script, *argv]\n"
            "    with contextlib.redirect_stderr(err):\n"
            "        try:\n"
            "            runpy.run_path('recipes/' + script, run_name='__main__')\n"
            "            code = 0\n"
            "        except SystemExit as stop:\n"
            "            code = stop.code\n"
            "    seen[script] = [code, err.getvalue().strip().splitlines()]\n"
            "print(json.dumps(seen))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert list(seen) == [script for script, _ in cases]
    for script, (code, lines) in seen.items():
        assert code == 2 and lines == [
            "error: odezoo.experiments needs the 'recipes' extra (missing: mlxtend). "
            "Install it with: pip install 'odezoo[recipes]'"], (script, code, lines)

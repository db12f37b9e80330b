"""The docs site, API reference included, builds with ``mkdocs build --strict`` and without torch.

The build runs with the interpreter of ``.venv-docs`` (what ``make docs`` and ``make test``
create: the docs tools only, docs/requirements.txt) or, failing that, with this interpreter when
it has mkdocs and mkdocstrings.  Either way torch and torchdiffeq are made unimportable for the
build: mkdocstrings must read the source statically, never import odezoo.
"""
from __future__ import annotations

import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import odezoo

ROOT = Path(__file__).resolve().parents[1]
DOCS_PYTHON = ROOT / os.environ.get("DOCS_VENV", ".venv-docs") / "bin" / "python"
#: odezoo's public names documented elsewhere than a ``::: odezoo.NAME`` block, and where.
DOCUMENTED_ELSEWHERE = {
    "hookimpl": "pluggy marker: docs/plugins.md",
    "hookspec": "pluggy marker: docs/plugins.md",
}
#: Run with ``python -c``: torch unimportable, then mkdocs' own command line.
BUILD = ("import sys; sys.modules.update(torch=None, torchdiffeq=None); "
         "from mkdocs.__main__ import cli; sys.argv[0] = 'mkdocs'; cli()")


def docs_python() -> str | None:
    if DOCS_PYTHON.exists():
        return str(DOCS_PYTHON)
    if importlib.util.find_spec("mkdocs") and importlib.util.find_spec("mkdocstrings"):
        return sys.executable
    return None


def test_docs_build_strict_without_torch(tmp_path):
    python = docs_python()
    if python is None:
        pytest.skip("no docs tools: `make docs` creates .venv-docs (docs/requirements.txt); mkdocs-material "
                    "cannot live in .venv, where torchattacks pins an old requests")
    result = subprocess.run([python, "-c", BUILD, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                            cwd=ROOT, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert result.returncode == 0, result.stdout + result.stderr
    core = (tmp_path / "site" / "api" / "core" / "index.html").read_text()
    assert 'id="odezoo.SolverFamily"' in core and 'id="odezoo.OdezooStepWarning"' in core
    assert 'id="odezoo.experiments.io.save_checkpoint"' in (
        tmp_path / "site" / "api" / "experiments" / "io" / "index.html").read_text()
    # offline: no script, stylesheet or font from the network; the math engine ships with the site
    pages = list((tmp_path / "site").rglob("*.html"))
    remote = sorted({m for page in pages for m in re.findall(r'(?:src|href)="(https?://[^"]+\.(?:js|css)[^"]*)"',
                                                            page.read_text(encoding="utf-8"))})
    assert not remote, f"the site loads {remote}"
    assert not [p for p in pages if "fonts.googleapis" in p.read_text(encoding="utf-8")]
    families = (tmp_path / "site" / "families" / "index.html").read_text(encoding="utf-8")
    assert 'class="arithmatex"' in families and "javascripts/mathjax/tex-svg.js" in families
    assert (tmp_path / "site" / "javascripts" / "mathjax" / "tex-svg.js").stat().st_size > 1_000_000
    # the experiments' docstrings link instead of showing Sphinx roles
    api = "".join(p.read_text(encoding="utf-8") for p in (tmp_path / "site" / "api" / "experiments").rglob("*.html"))
    assert ":class:" not in api and ":func:" not in api and ":mod:" not in api
    assert 'href="../io/#odezoo.experiments.io.IntegrityError"' in api or "#odezoo.experiments.io.IntegrityError" in api


def test_docs_venv_has_no_torch():
    if not DOCS_PYTHON.exists():
        pytest.skip(".venv-docs not created (make docs)")
    probe = subprocess.run([str(DOCS_PYTHON), "-c", "import importlib.util as u; "
                            "print(u.find_spec('torch'), u.find_spec('odezoo'))"],
                           capture_output=True, text=True, timeout=60, cwd="/",
                           env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert probe.stdout.split() == ["None", "None"], probe.stdout + probe.stderr


def test_docs_requirements_match_the_docs_extra():
    tomllib = pytest.importorskip("tomllib")
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]["docs"]
    lines = [line.strip() for line in (ROOT / "docs" / "requirements.txt").read_text().splitlines()]
    assert [line for line in lines if line and not line.startswith("#")] == extra


def test_every_public_name_has_an_api_entry():
    pages = "\n".join(p.read_text() for p in (ROOT / "docs" / "api").rglob("*.md"))
    blocks = set(re.findall(r"^::: ([\w.]+)", pages, flags=re.M))
    whole_modules = {b for b in blocks if b.count(".") == 1 and b.split(".")[1][0].islower()}
    missing = []
    for name in odezoo.__all__:
        module = getattr(odezoo, name).__module__ if hasattr(getattr(odezoo, name), "__module__") else ""
        if name in DOCUMENTED_ELSEWHERE or f"odezoo.{name}" in blocks or module in whole_modules:
            continue
        missing.append(name)
    assert not missing, f"odezoo names without an API entry in docs/api/: {missing}"
    for module in ("models", "data", "training", "attacks", "evaluation", "masking", "io", "plots", "config",
                   "protocol", "statistics", "report", "sweep"):
        assert f"odezoo.experiments.{module}" in blocks, module

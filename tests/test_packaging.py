"""A non-editable install works: the wheel holds every subpackage and the built-in families."""
from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


#: what a build of the source tree must not see: venvs, earlier builds (setuptools reuses build/lib,
#: so a package removed from the source, such as the old odezoo_families, would still ship), run output
IGNORED = shutil.ignore_patterns(".git", ".venv*", "build", "dist", "*.egg-info", "runs", "site", "__pycache__",
                                 ".hypothesis", ".pytest_cache")


@pytest.mark.slow
def test_wheel_contains_every_subpackage(tmp_path):
    pytest.importorskip("setuptools")
    source = tmp_path / "source"
    shutil.copytree(ROOT, source, ignore=IGNORED)
    result = subprocess.run([sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation",
                             "--quiet", "--wheel-dir", str(tmp_path)], capture_output=True, text=True, timeout=300,
                            cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    (wheel,) = tmp_path.glob("odezoo-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {str(p.relative_to(ROOT)) for p in (ROOT / "odezoo").rglob("*.py") if "__pycache__" not in p.parts}
    expected |= {str(p.relative_to(ROOT)) for p in (ROOT / "odezoo_cli").rglob("*.py")}  # the torch-free parser
    assert {"odezoo/experiments/__init__.py", "odezoo/families/rk2_u.py", "odezoo_cli/_app.py"} <= expected
    missing = sorted(expected - names)
    assert not missing, f"the wheel lacks {missing}"
    stray = sorted(n for n in names if n.endswith(".py") and n.split("/")[0] not in ("odezoo", "odezoo_cli"))
    assert not stray, f"the wheel ships files outside the packages: {stray}"
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    text = zipfile.ZipFile(wheel).read(entry_points).decode()
    assert "odezoo = odezoo_cli:main" in text
    assert "[odezoo]" not in text, "built-in families are listed once, in BUILTIN_FAMILY_MODULES"

import os
import subprocess
import sys
from pathlib import Path

import odezoo
from odezoo.cli import main
from odezoo.parsing import parse_number


def test_families_table(capsys):
    assert main(["families"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "params", "defaults", "order", "stages", "provider"]
    row = next(line for line in lines if line.startswith("rk4_uv"))
    assert "u, v" in row and " 4 " in row and "built-in" in row


def test_tableau_command(capsys):
    assert main(["tableau", "rk4_uv", "--u", "0.3", "--v=0.6"]) == 0
    out = capsys.readouterr().out
    assert "order 4 (declared 4), 4 stages" in out
    assert "0.142857" in out  # b4 = D / (12 (1-u)(1-v)) = 0.48 / 3.36


def test_tableau_accepts_fractions(capsys):
    assert main(["tableau", "rk4_u2", "--u", "1/3"]) == 0
    assert "0.166667" in capsys.readouterr().out
    assert parse_number("2/3") == 2 / 3


def test_tableau_errors_are_clear(capsys):
    assert main(["tableau", "rk4_uv", "--u", "1/4", "--v", "4/5"]) == 2
    assert "D = 6uv" in capsys.readouterr().err
    assert main(["tableau", "rk2_u", "--x", "1"]) == 2
    assert "unknown parameter" in capsys.readouterr().err
    assert main(["tableau", "nope"]) == 2
    assert "unknown solver family" in capsys.readouterr().err
    assert main(["tableau", "rk2_u", "--u", "abc"]) == 2
    assert "not a number" in capsys.readouterr().err


def run_cli(*args):
    """The command line as a user runs it: ``python -m odezoo ...`` in a fresh interpreter."""
    root = Path(__file__).resolve().parents[1]
    path = os.pathsep.join([str(root), str(root / "plugins"), os.environ.get("PYTHONPATH", "")])
    return subprocess.run([sys.executable, "-m", "odezoo", *args], capture_output=True, text=True, cwd=root,
                          env={**os.environ, "PYTHONPATH": path}, timeout=120)


def test_python_dash_m_and_version():
    version = run_cli("--version")
    assert version.returncode == 0 and version.stdout.strip() == f"odezoo {odezoo.__version__}"
    families = run_cli("families")
    assert families.returncode == 0 and "rk4_uv" in families.stdout


def test_errors_are_one_line_and_exit_2():
    bad = run_cli("tableau", "rk4_uv", "--u", "1/4", "--v", "4/5")
    assert bad.returncode == 2 and bad.stdout == ""
    assert bad.stderr.startswith("odezoo: error: ") and len(bad.stderr.strip().splitlines()) == 1
    assert run_cli("tableau").returncode == 2
    assert run_cli("nope").returncode == 2


def test_tableau_help_lists_every_family_with_parameters_defaults_and_support(capsys):
    assert main(["tableau", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: odezoo tableau")
    for name, family in odezoo.families().items():
        line = next(line for line in out.splitlines() if line.split()[:1] == [name])
        for p in family.params:
            low, high = family.support[p]
            assert f"--{p} {family.defaults[p]:.6g} in [{low:g}, {high:g}]" in line


def test_tableau_family_help_shows_its_parameters_constraints_and_members(capsys):
    assert main(["tableau", "rk4_uv", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: odezoo tableau rk4_uv [--u VALUE] [--v VALUE]")
    assert "--u  default 0.3333333333, support [0.05, 0.95]" in out
    assert "--v  default 0.6666666667, support [0.05, 0.95]" in out
    assert "D = 6uv - 4u - 4v + 3 != 0" in out and "u != v" in out
    assert "three_eighths  --u 0.3333333333 --v 0.6666666667" in out
    assert main(["tableau", "rk2_u", "-h"]) == 0
    out = capsys.readouterr().out
    assert "midpoint  --u 0.5" in out and "heun" in out and "ralston" in out
    assert main(["tableau", "nope", "--help"]) == 2
    assert capsys.readouterr().err.startswith("odezoo: error: unknown solver family 'nope'")


def test_subprocess_family_help():
    result = run_cli("tableau", "rk2_u", "--help")
    assert result.returncode == 0 and "--u  default 0.5, support [0.05, 1]" in result.stdout

import os
import re
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


def test_families_params_lists_every_family_with_parameters_defaults_and_support(capsys):
    assert main(["tableau", "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: odezoo tableau") and "odezoo families --params" in out
    assert main(["families", "--params"]) == 0
    out = capsys.readouterr().out
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


# ----------------------------------------------------------------------------- one command line
COMMANDS = ("families", "tableau", "train", "evaluate", "sweep", "reproduce", "report", "demo")


def _modules_after(code: str) -> set[str]:
    """The modules a fresh interpreter has imported after running ``code``."""
    root = Path(__file__).resolve().parents[1]
    probe = code + "\nimport json, sys\nprint('MODULES=' + json.dumps(sorted(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=root, timeout=120)
    line = next(line for line in result.stdout.splitlines() if line.startswith("MODULES="))
    return set(__import__("json").loads(line[len("MODULES="):]))


def test_help_of_the_program_and_of_every_command_imports_neither_torch_nor_odezoo():
    """`odezoo --help` and `odezoo COMMAND --help` answer from the standard library alone."""
    for argv in ([], *[[command] for command in COMMANDS]):
        code = ("import contextlib, io\nfrom odezoo_cli import main\nbuffer = io.StringIO()\n"
                f"with contextlib.redirect_stdout(buffer):\n    try:\n        main({argv + ['--help']!r})\n"
                "    except SystemExit:\n        pass\n"
                "assert 'usage: odezoo' in buffer.getvalue(), buffer.getvalue()")
        loaded = _modules_after(code)
        assert "torch" not in loaded and "odezoo" not in loaded and "numpy" not in loaded, (argv, sorted(
            m for m in loaded if m.split(".")[0] in ("torch", "odezoo", "numpy")))


def _imported_by(command: list[str]) -> tuple[subprocess.CompletedProcess, set[str]]:
    """Run ``command`` (a Python program) under ``python -X importtime``; its result and every
    module it imported (from the import-time report on stderr)."""
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "-X", "importtime", *command], capture_output=True, text=True,
                            cwd=root, timeout=120)
    modules = {line.rsplit("|", 1)[1].strip() for line in result.stderr.splitlines()
               if line.startswith("import time:") and line.count("|") == 2}
    assert "argparse" in modules, result.stderr[-2000:]  # the report was read
    return result, modules


def test_help_through_both_entry_points_never_imports_torch():
    """`python -m odezoo [COMMAND] --help` (which imports the odezoo package first) and the
    `odezoo` console script answer every help without torch or numpy; so do --version and a
    usage error under -m (a command that runs under -m: test_python_dash_m_and_version)."""
    from importlib.metadata import PackageNotFoundError, distribution

    script = Path(sys.executable).with_name("odezoo")
    try:  # installed (make test's .venv): its console script is tested too
        assert distribution("odezoo") and script.is_file(), f"odezoo is installed but {script} is missing"
        entries = [["-m", "odezoo"], [str(script)]]
    except PackageNotFoundError:
        entries = [["-m", "odezoo"]]
    for entry in entries:
        for argv in ([], *[[command] for command in COMMANDS]):
            result, modules = _imported_by([*entry, *argv, "--help"])
            assert result.returncode == 0 and result.stdout.startswith("usage: odezoo"), (entry, argv, result.stderr)
            heavy = sorted(m for m in modules if m.split(".")[0] in ("torch", "numpy", "torchdiffeq"))
            assert not heavy, (entry, argv, heavy)
    for argv, status in ((["--version"], 0), (["train", "--epochs", "0"], 2), (["nope"], 2), ([], 2), (["tableau"], 2)):
        result, modules = _imported_by(["-m", "odezoo", *argv])
        assert result.returncode == status and "torch" not in modules, (argv, result.returncode)


def test_every_flag_of_every_command_has_help_and_one_meaning():
    """Help on every flag; a flag name used by several commands keeps its help (one vocabulary),
    except where a command names its own default."""
    from odezoo_cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    seen: dict[str, set[str]] = {}
    for name, command in sub.choices.items():
        for action in command._actions:
            if not action.option_strings or action.dest == "help":
                continue
            assert action.help, f"odezoo {name} {action.option_strings[0]} has no help"
            seen.setdefault(action.option_strings[-1], set()).add(name)
    # the ideas that used to have two names: one name each now
    assert "--test-batches" not in seen and "--max-batches" in seen and seen["--max-batches"] >= {"evaluate", "demo"}
    assert seen["--quiet"] >= {"train", "evaluate", "demo"} and seen["--verbose"] >= {"sweep", "reproduce"}
    assert seen["--out"] >= {"train", "evaluate", "sweep", "reproduce", "demo"}


def test_the_cli_constants_agree_with_the_library():
    import pytest

    pytest.importorskip("odezoo.experiments", reason="needs the recipes extra")
    from odezoo.experiments.commands import reproduce
    from odezoo.experiments.loggers import LOGGERS
    from odezoo.experiments.protocol import PROTOCOLS
    from odezoo.experiments.sweep import LAUNCHERS
    from odezoo_cli import _app

    assert _app.EXPERIMENTS == reproduce.EXPERIMENTS
    assert set(_app.PROTOCOL_NAMES) == set(PROTOCOLS)
    assert _app.LAUNCHERS == LAUNCHERS and _app.LOGGERS == LOGGERS


def test_bad_flags_are_refused_with_the_command_named(capsys):
    import pytest

    for argv, expected in ((["train", "--epochs", "0"], "must be a positive integer"),
                           (["train", "--epoch", "3"], "unrecognized arguments: --epoch 3"),
                           (["train", "--logger", "wandb"], "unknown logger(s) wandb"),
                           (["demo", "--max-batches", "2.5"], "must be a positive integer")):
        with pytest.raises(SystemExit) as stop:
            main(argv)
        assert stop.value.code == 2 and expected in capsys.readouterr().err, argv


def test_no_recipe_imports_another_recipe_or_touches_sys_path():
    root = Path(__file__).resolve().parents[1]
    recipes = sorted((root / "recipes").glob("*.py"))
    names = {script.stem for script in recipes}
    for script in recipes:
        text = script.read_text()
        assert "sys.path" not in text and "spec_from_file_location" not in text, script
        for other in names - {script.stem}:
            assert not re.search(rf"^\s*(from {other} import|import {other}\b)", text, re.M), (script, other)
    for command in ("train", "evaluate", "sweep", "reproduce", "demo"):  # the commands' thin entry points
        text = (root / "recipes" / f"{command}.py").read_text()
        assert len(text.splitlines()) <= 15 and f'main(["{command}", *sys.argv[1:]])' in text, command
    toolkit = (root / "odezoo" / "experiments").rglob("*.py")
    assert not [p for p in toolkit if "spec_from_file_location" in p.read_text() or "sys.path.insert" in p.read_text()]


def test_a_recipe_script_is_the_same_program():
    root = Path(__file__).resolve().parents[1]
    result = subprocess.run([sys.executable, "recipes/train.py", "--help"], capture_output=True, text=True, cwd=root,
                            timeout=120)
    assert result.returncode == 0 and result.stdout.startswith("usage: odezoo train")

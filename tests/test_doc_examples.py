"""Every code example in README.md and docs/*.md runs.

Python blocks of one page run in order in one namespace, after a preamble that defines the
names an example may assume without showing them (``f``, ``y0``, ``t``, ``func``, ``model``,
``x``, ``test_loader``, ...: tiny, so the page runs in seconds).  A line whose comment says
``# ValueError`` must raise it.  odezoo's step warnings are errors here (an example that
warns is not an example to copy).  Every ``odezoo ...`` command line in a bash block must
parse with the command line's own parser (its flags exist and their values are valid).
"""
from __future__ import annotations

import re
import shlex
import textwrap
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^( *)```(python|bash)\n(.*?)^\1```", re.S | re.M)

PREAMBLE = '''
import torch, odezoo
from torch import nn
from torchdiffeq import odeint, odeint_adjoint
from odezoo import hookimpl, hookspec, MetaSolver, SolverSpec, ODEBlock
torch.manual_seed(0)
f = lambda t, y: torch.cos(t) * y
y0 = torch.ones(3)
t = torch.linspace(0., 2., 5)

class Func(nn.Module):
    def __init__(self, width=16):
        super().__init__()
        self.lin = nn.Linear(width, width)
    def forward(self, t, y):
        return torch.tanh(self.lin(y)) * torch.cos(t)

func = Func()
model = nn.Sequential(nn.Flatten(), nn.Linear(784, 16),
                      ODEBlock(Func(), MetaSolver.fixed(SolverSpec("rk2_u", {"u": 0.5}, n_steps=2))),
                      nn.Linear(16, 10)).eval()
x = torch.rand(4, 1, 28, 28)
test_loader = [(torch.rand(8, 1, 28, 28), torch.randint(0, 10, (8,))) for _ in range(2)]
epochs = 1
train_one_epoch = evaluate = lambda model: None
# the Dormand-Prince 5(4) pair, for "one tableau, one call"
A5 = [[0, 0, 0, 0, 0, 0, 0], [1/5, 0, 0, 0, 0, 0, 0], [3/40, 9/40, 0, 0, 0, 0, 0],
      [44/45, -56/15, 32/9, 0, 0, 0, 0], [19372/6561, -25360/2187, 64448/6561, -212/729, 0, 0, 0],
      [9017/3168, -355/33, 46732/5247, 49/176, -5103/18656, 0, 0],
      [35/384, 0, 500/1113, 125/192, -2187/6784, 11/84, 0]]
b5 = [35/384, 0, 500/1113, 125/192, -2187/6784, 11/84, 0]
c5 = [0, 1/5, 3/10, 4/5, 8/9, 1, 1]
b5_hat = [5179/57600, 0, 7571/16695, 393/640, -92097/339200, 187/2100, 1/40]
c5_mid = [6025192743/30085553152 / 2, 0, 51252292925/65400821598 / 2, -2691868925/45128329728 / 2,
          187940372067/1594534317056 / 2, -1776094331/19743644256 / 2, 11237099/235043384 / 2]
MY_FAMILY = odezoo.get_family("rk2_u")
'''


def _expect_errors(code: str) -> str:
    """``stmt  # ValueError: ...`` -> a check that ``stmt`` raises ValueError."""
    out = []
    for line in code.splitlines():
        m = re.match(r"^(\s*)(.+?)\s+# (ValueError|KeyError|TypeError)\b", line)
        if m:
            out.append(f"{m[1]}with __pytest.raises({m[3]}):\n{m[1]}    {m[2]}")
        else:
            out.append(line)
    return "\n".join(out)


def _blocks(page: Path, kind: str) -> list[str]:
    return [textwrap.dedent(m[3]) for m in BLOCK.finditer(page.read_text(encoding="utf-8")) if m[2] == kind]


@pytest.mark.parametrize("page", [p for p in PAGES if _blocks(p, "python")], ids=lambda p: p.name)
def test_every_python_example_runs(page, tmp_path, monkeypatch):
    pytest.importorskip("odezoo.experiments", reason="the recipes examples need the recipes extra")
    import odezoo

    monkeypatch.chdir(tmp_path)  # examples that save a file save it here
    namespace = {"__pytest": pytest, "__name__": f"doc_example_{page.stem}"}
    exec(compile(PREAMBLE, "<preamble>", "exec"), namespace)
    registered = set(odezoo.families())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", odezoo.OdezooStepWarning)
            for number, code in enumerate(_blocks(page, "python"), start=1):
                if code.lstrip().startswith("@hookspec"):  # the hook's signature, shown as declared
                    code = "def _declared():\n" + textwrap.indent(code, "    ") + "\n    return odezoo_register_families"
                try:
                    exec(compile(_expect_errors(code), f"{page.name}, python block {number}", "exec"), namespace)
                except Exception as error:
                    raise AssertionError(f"{page.name}, python block {number} fails: {error!r}\n{code}") from error
    finally:
        for name in set(odezoo.families()) - registered:  # an example that registers a family
            try:
                odezoo.unregister_tableau(name)
            except Exception:  # noqa: BLE001 — a plugin's family leaves with its plugin below
                pass
        for plugin in ("my-plugin",):
            try:
                odezoo.unregister_plugin(plugin)
            except Exception:  # noqa: BLE001
                pass


def _odezoo_commands(page: Path) -> list[list[str]]:
    commands = []
    for code in _blocks(page, "bash"):
        code = code.replace("\\\n", " ")
        for line in code.splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("torchrun"):
                line = line[line.index("-m odezoo") + 3:] if "-m odezoo" in line else ""
            if line.startswith("odezoo "):
                commands.append(shlex.split(line)[1:])
    return commands


@pytest.mark.parametrize("page", [p for p in PAGES if _odezoo_commands(p)], ids=lambda p: p.name)
def test_every_documented_command_line_parses(page):
    from odezoo_cli import build_parser

    for argv in _odezoo_commands(page):
        parser = build_parser()
        args, extras = parser.parse_known_args(argv)
        assert args.command, argv
        assert not extras or args.command == "tableau", f"{page.name}: odezoo {' '.join(argv)}: unknown {extras}"


def test_the_docs_show_the_one_command_line_not_the_old_scripts():
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        old = re.findall(r"python recipes/(?:train|evaluate|reproduce|sweep|demo)\.py(?! --help)", text)
        assert not old, f"{page.name} still shows {old[:2]}: use odezoo COMMAND"


CONSOLE = re.compile(r"^```console\n(.*?)^```", re.S | re.M)


def _transcripts(text: str):
    """(start, end, command, shown output) of every ``$ odezoo ...`` in ```console blocks."""
    for block in CONSOLE.finditer(text):
        body, offset = block[1], block.start(1)
        for m in re.finditer(r"^\$ (odezoo [^\n]*)\n(.*?)(?=^\$ |\Z)", body, re.S | re.M):
            yield offset + m.start(2), offset + m.end(2), m[1], m[2]


@pytest.mark.parametrize("page", [p for p in PAGES if "```console" in p.read_text(encoding="utf-8")],
                         ids=lambda p: p.name)
def test_console_transcripts_are_what_the_commands_print(page, capsys):
    """``$ odezoo families`` and friends show what the command prints today (the families list
    is generated: ODEZOO_UPDATE_DOCS=1 pytest tests/test_doc_examples.py rewrites the
    transcripts from the commands' output)."""
    import os

    from odezoo_cli import main

    text = page.read_text(encoding="utf-8")
    updated, stale = text, []
    for start, end, command, shown in reversed(list(_transcripts(text))):
        command, _, grep = command.partition(" | grep ")
        assert main(shlex.split(command, comments=True)[1:]) == 0, command
        printed = capsys.readouterr().out
        if grep:
            printed = "".join(line for line in printed.splitlines(keepends=True) if grep.strip() in line)
        expected = printed if shown.endswith("\n\n") is False else printed + "\n"
        if shown.rstrip("\n") != printed.rstrip("\n"):
            stale.append(f"$ {command}{' | grep ' + grep if grep else ''}\n{printed}")
            updated = updated[:start] + expected + updated[end:]
    if stale and os.environ.get("ODEZOO_UPDATE_DOCS") == "1":
        page.write_text(updated, encoding="utf-8")
        return
    assert not stale, (f"{page.name} shows stale output (ODEZOO_UPDATE_DOCS=1 rewrites it):\n" + "\n".join(stale))

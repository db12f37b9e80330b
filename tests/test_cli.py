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

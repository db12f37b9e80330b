"""One schema for the whole recipe config: unknown keys (any depth) refused with a
did-you-mean, bad choices and types named by their dotted key, everything (solver and
evaluation settings included) checked before training starts."""
import copy
import re
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from odezoo import SolverSpec
from odezoo.experiments.config import (DEFAULTS, ConfigError, check_run_name, load_config, meta_solver_from_config,
                                       parse_override, validate_config)

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "recipes" / "configs").glob("*.yaml"))
FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def leaf_paths(cfg, prefix=()):
    for key, value in cfg.items():
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, (*prefix, key))
        else:
            yield (*prefix, key)


BASE = validate_config({**DEFAULTS, "track_robust": {"attack": "pgd", "eps": 0.1}})
PATHS = sorted(p for p in leaf_paths(BASE) if p[0] != "model_kwargs")


def dotted(path):
    return ".".join(path)


def with_value(cfg, path, value):
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


def renamed(cfg, path, new_key):
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[new_key] = node.pop(path[-1])
    return cfg


@pytest.mark.parametrize("config", CONFIGS, ids=[c.stem for c in CONFIGS])
def test_every_shipped_config_is_valid_and_normalized_once(config):
    cfg = load_config(str(config))
    assert validate_config(cfg) == cfg
    assert cfg["name"] == config.stem and set(cfg) == set(DEFAULTS)


@FAST
@given(path=st.sampled_from(PATHS), data=st.data())
def test_a_typo_in_any_key_is_refused_with_its_dotted_key_and_a_suggestion(path, data):
    key = path[-1]
    i = data.draw(st.integers(0, len(key) - 1))
    edit = data.draw(st.sampled_from(["drop", "double", "swap", "upper"]))
    typo = {"drop": key[:i] + key[i + 1:], "double": key[:i] + key[i] + key[i:],
            "swap": key[:i] + key[i + 1:i + 2] + key[i] + key[i + 2:], "upper": key[:i] + key[i].upper() + key[i + 1:]}[edit]
    siblings = BASE
    for part in path[:-1]:
        siblings = siblings[part]
    assume(typo and typo != key and typo not in siblings)
    with pytest.raises(ConfigError) as info:
        validate_config(renamed(BASE, path, typo))
    message = str(info.value)
    assert re.search(rf"{re.escape(dotted((*path[:-1], typo)))}: unknown (key|parameter)", message), message
    if "did you mean" in message:
        suggested = re.search(r"did you mean '([^']+)'", message).group(1)
        assert suggested.rsplit(".", 1)[0] == dotted(path[:-1]) or len(path) == 1


BAD_VALUES = st.sampled_from(["abc", [1, 2], {"x": 1}, -5, 2.5, True, "1/0", float("nan")])


@FAST
@given(path=st.sampled_from(PATHS), value=BAD_VALUES)
def test_a_bad_value_anywhere_is_refused_naming_the_dotted_key_or_accepted_as_valid(path, value):
    cfg = with_value(BASE, path, value)
    try:
        checked = validate_config(cfg)
    except ConfigError as error:
        message = str(error)
        key = dotted(path)
        if path[0] == "solver" and "solver" in message:
            return  # a value the solver itself refuses (e.g. a parameter on a singular set)
        assert re.search(rf"(^|\s){re.escape(key)}(\[\d+\])?:", message) or \
            re.search(rf"(^|\s){re.escape(dotted(path[:-1]))}(\.\w+)?:", message), message
    else:  # accepted: then it was a legitimate value for this key, normalized
        assert validate_config(checked) == checked


@pytest.mark.parametrize("override,message", [
    ("solver.distrbution=normal", "solver.distrbution: unknown key — did you mean 'solver.distribution'?"),
    ("adversarial.epsilon=0.1", "adversarial.epsilon: unknown key — did you mean 'adversarial.eps'?"),
    ("evl.eps=[0.1]", "evl: unknown key — did you mean 'eval'?"),
    ("resample=foo", "resample: must be one of ['epoch', 'batch'], got 'foo'"),
    ("adversarial.kind=fgm", "did you mean 'fgsm'?"),
    ("eval.eps=abc", "eval.eps: item 0: not a number: 'abc'"),
    ("eval.attacks=[fgsm, cw]", "eval.attacks: item 1: must be one of ['fgsm', 'pgd'], got 'cw'"),
    ("eval.pgd_steps=0", "eval.pgd_steps: must be a positive integer, got 0"),
    ("eval.pgd_step_size=-1", "eval.pgd_step_size: must be positive"),
    ("optimizer=5", "optimizer: must be a mapping with keys"),
    ("optimizer.name=adamw", "optimizer.name: must be one of ['rmsprop', 'sgd', 'adam'], got 'adamw'"),
    ("solver.mode=smoth", "unknown solver mode 'smoth'; choose fixed, switching, smoothing or ensemble; did you mean"),
    ("solver.n_steps=2.5", "solver.n_steps: n_steps must be a positive integer, got 2.5"),
    ("solver.params.u=abc", "solver.params.u: not a number: 'abc'"),
    ("solver.params.u=0", "solver: rk2_u: parameters u=0 violate the constraint u != 0"),
    ("solver.params.w=0.3", "solver.params.w: unknown parameter of rk2_u (it takes u)"),
    ("solver.params.uu=0.3", "solver.params.uu: unknown parameter of rk2_u — did you mean 'solver.params.u'?"),
    ("solver.method=rk2u", "solver.method: unknown method 'rk2u' — did you mean 'rk2_u'?"),
    ("solver.weights=[1.0]", "solver.weights: does not apply to solver mode 'fixed'"),
    ("solver.mode=switching", "solver.params: does not apply to solver mode 'switching'"),
    ("track_robust.attack=pgd", "track_robust.eps: required"),
    ("model_kwargs.chanels=3", "model_kwargs.chanels: unknown argument of model 'mnist'; did you mean 'channels'?"),
    ("name=../elsewhere", "name: a run name is one folder name under runs/"),
    ("batch_size=0", "batch_size: must be a positive integer, got 0"),
    ("epochs=1.5", "epochs: must be a positive integer, got 1.5"),
    ("download=maybe", "download: must be true or false"),
    ("device=gpu", "device: must be auto, cpu, cuda, cuda:N or mps"),
    ("name.x=1", "name is not a section"),
])
def test_overrides_are_checked_with_the_full_key(override, message):
    with pytest.raises(ConfigError) as info:
        load_config(None, [override])
    assert message in str(info.value)


def test_every_problem_is_reported_at_once():
    with pytest.raises(ConfigError) as info:
        load_config(None, ["epochs=0", "eval.eps=abc", "solver.distrbution=normal", "optimizer.lr=-1"])
    lines = str(info.value).splitlines()
    assert len(lines) == 5 and lines[0] == "invalid config:"
    assert {line.split(":")[0].strip() for line in lines[1:]} == {"epochs", "eval.eps", "solver.distrbution",
                                                                   "optimizer.lr"}


def test_set_keeps_working():
    cfg = load_config(str(ROOT / "recipes/configs/mnist_rk2_smoothing.yaml"),
                      ["solver.scale=0.05", "solver.params.u=1/3", "optimizer.lr=1e-4", "track_robust.eps=0.1",
                       "eval.eps=0.1,8/255", "model_kwargs.channels=16", "schedule=null"])
    assert cfg["solver"]["scale"] == 0.05 and cfg["solver"]["params"]["u"] == 1 / 3
    assert cfg["optimizer"]["lr"] == 1e-4 and cfg["track_robust"]["eps"] == 0.1
    assert cfg["eval"]["eps"] == [0.1, 8 / 255] and cfg["model_kwargs"] == {"channels": 16}
    assert cfg["schedule"] is None
    with pytest.raises(ConfigError, match="--set expects key.sub=value"):
        parse_override("solver.scale")


def test_yaml_files_must_be_mappings(tmp_path):
    (tmp_path / "list.yaml").write_text("- a\n- b\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(str(tmp_path / "list.yaml"))
    (tmp_path / "bad.yaml").write_text("solver: {mode: fixed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(str(tmp_path / "bad.yaml"))
    (tmp_path / "typo.yaml").write_text("solver: {mode: smoothing, method: rk2_u, scale: 0.1, distrbution: normal}\n")
    with pytest.raises(ConfigError, match=r"solver.distrbution: unknown key — did you mean 'solver.distribution'"):
        load_config(str(tmp_path / "typo.yaml"))


def test_meta_solver_from_config_uses_the_same_schema():
    with pytest.raises(ConfigError, match=r"solver.distrbution: unknown key — did you mean 'solver.distribution'"):
        meta_solver_from_config({"mode": "smoothing", "method": "rk2_u", "distrbution": "normal", "scale": 0.1})
    with pytest.raises(ConfigError, match=r"solver.specs\[1\].parms: unknown key — did you mean 'solver.specs\[1\].params'"):
        meta_solver_from_config({"mode": "switching", "method": "rk2_u",
                                 "specs": [{"params": {"u": 0.5}}, {"parms": {"u": 1.0}}]})


def test_one_message_for_a_step_count_from_any_door():
    with pytest.raises(ValueError) as spec_error:
        SolverSpec("rk2_u", n_steps=2.5)
    with pytest.raises(ConfigError) as config_error:
        load_config(None, ["solver.n_steps=2.5"])
    core = str(spec_error.value).split(": ", 1)[1]
    assert str(config_error.value).endswith(f"solver.n_steps: {core}")


@pytest.mark.parametrize("name", ["../x", "a/b", "/abs", "..", ".", "", "a\\b", " padded", "tab\tname"])
def test_run_names_stay_inside_runs(name):
    with pytest.raises(ValueError, match="run name"):
        check_run_name(name)


@pytest.mark.parametrize("name", ["mnist_rk2_fixed", "u0.5_seed0", "u-0.25_seed1", "rk4_u2_8_seed0"])
def test_ordinary_run_names_pass(name):
    assert check_run_name(name) == name


def test_train_refuses_a_bad_config_before_writing_anything(tmp_path, capsys):
    from odezoo.experiments.commands import train

    for override in ["eval.eps=abc", "eval.attacks=[cw]", "solver.distrbution=normal", "resample=foo"]:
        with pytest.raises(SystemExit) as info:
            train.main(["--defaults", "--dry-run", "--quiet", "--device", "cpu", "--out", str(tmp_path / "run"), "--set", override])
        assert info.value.code == 2
        assert override.split("=")[0].split("[")[0] in capsys.readouterr().err
        assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit):
        train.main(["--defaults", "--dry-run", "--quiet", "--set", "name=../outside"])
    assert "run name" in capsys.readouterr().err
    assert not (ROOT / "outside").exists()
    for flag in (["--batch-size", "0"], ["--epochs", "0"], ["--stop-after", "0"]):
        with pytest.raises(SystemExit) as info:
            train.main(["--defaults", "--dry-run", "--out", str(tmp_path / "run"), *flag])
        assert info.value.code == 2 and "must be a positive integer" in capsys.readouterr().err


def test_pydantic_is_in_the_recipes_extra():
    import odezoo.experiments as ex

    text = (ROOT / "pyproject.toml").read_text()
    recipes = text.split("recipes = [", 1)[1].split("]", 1)[0]
    assert "pydantic>=2" in recipes and ex.RECIPES_EXTRA["pydantic"] == "pydantic"
    assert yaml.safe_load(yaml.safe_dump(BASE)) == BASE  # a normalized config is plain YAML

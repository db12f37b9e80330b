"""Recipe configuration: the defaults, YAML files with ``--set`` overrides, one schema for the
whole config, solvers from config mappings and compact command-line strings.

Every config a recipe runs is checked completely by [`validate_config`][odezoo.experiments.config.validate_config]
before any data
is loaded or any epoch trained: unknown keys at any depth (with a did-you-mean), values
outside a set of choices, wrong types, numbers out of range, settings that do not apply to
the chosen solver mode, the solver itself (built once) and the evaluation settings.  Each
problem is reported with its full dotted key (``solver.distribution``, ``eval.eps[1]``), all
of them at once, as one [`ConfigError`][odezoo.experiments.config.ConfigError].

The schema is written with **pydantic v2** models (``extra="forbid"``).  Why pydantic: it is
the most widely used, actively maintained validation library for Python, its models
describe a nested config as plain typed classes (so the schema reads as documentation),
``extra="forbid"`` refuses unknown keys at every level, and its errors carry the location of
every failure, which is what the dotted-key messages are built from.  OmegaConf structured
configs would add a second config representation next to the plain dicts the recipes pass
around, and hand-written dataclass checks would re-implement what pydantic already does.
Numbers go through `odezoo.parsing.parse_number` and solver values through the same
checks as `odezoo.SolverSpec`, so a bad value gets the same message from a YAML file,
a ``--set`` override or the Python API.
"""
from __future__ import annotations

import copy
import difflib
import inspect
import itertools
import math
import re
import sys
from pathlib import Path
from typing import Annotated, Any, Callable, Mapping, NoReturn, Optional, Sequence, get_args

import yaml
from pydantic import BaseModel, ConfigDict, PlainValidator, ValidationError, model_validator

from odezoo import MetaSolver, SolverSpec
from odezoo.parsing import parse_number, parse_number_list
from odezoo.spec import check_n_steps, check_step_size, is_adaptive

from .attacks import ATTACKS
from .data import DATASETS
from .models import MODELS
from .training import ADVERSARIAL_KINDS

__all__ = ["DEFAULTS", "ConfigError", "RecipeConfig", "deep_update", "parse_override", "load_config",
           "validate_config", "check_run_name", "config_differences", "RecipeExit", "fail", "flag",
           "meta_solver_from_config", "parse_solver_grid", "parse_number_list", "positive_int"]


DEFAULTS: dict[str, Any] = {
    "name": "run",
    "dataset": "mnist-embedded",      # mnist-embedded | mnist-embedded-rgb32 | mnist | cifar10 | synthetic-cifar10
    "data_dir": None,
    "download": False,
    "model": "mnist",                 # mnist | cifar10
    "model_kwargs": {},               # e.g. {width: 16} for a narrower CIFAR-10 model
    "epochs": 10,
    "batch_size": 128,
    "seed": 0,
    "device": "auto",
    "num_workers": 0,
    "optimizer": {"name": "rmsprop", "lr": 1e-3, "momentum": 0.0, "weight_decay": 0.0},
    "schedule": {"name": "cyclic", "base_lr": 1e-5, "max_lr": 1e-3, "step_size_up": 2000,
                 "step_size_down": 2000, "mode": "triangular2"},
    "solver": {"mode": "fixed", "method": "rk2_u", "params": {"u": 0.5}, "n_steps": 8},
    "resample": "epoch",              # epoch | batch
    "adversarial": {"kind": "none", "eps": 0.3, "alpha": None, "steps": 7, "step_size": None},
    "track_robust": None,             # e.g. {attack: pgd, eps: 0.3, max_batches: 4}: robust val acc per epoch
    "eval": {"attacks": ["fgsm", "pgd"], "eps": [0.1, 0.2, 0.3], "pgd_steps": 7,
             "pgd_step_size": 2 / 255, "max_batches": None},
    "subset": None,                   # cap each split to N examples (dry runs, small scale)
    "loss_limit": 1e4,
    "precision": "fp32",              # fp32 | bf16 (autocast for the training forward pass)
}


class ConfigError(ValueError):
    """A recipe config is invalid; the message names every problem by its dotted key."""


# --------------------------------------------------------------------------- value checks
# Each returns the value as used or raises ValueError; the schema wraps them as field types
# and the recipes' flags call them directly, so the messages match.

def _show(value) -> str:
    return f"{value!r} ({type(value).__name__})"


def positive_int(value) -> int:
    """A whole number >= 1: ``8``, ``8.0`` or the text ``"8"`` (a flag, an override); not
    ``2.5``, ``0`` or ``True``."""
    return _whole(value, 1, "a positive integer")


def non_negative_int(value) -> int:
    """A whole number >= 0 (as [`positive_int`][odezoo.experiments.config.positive_int])."""
    return _whole(value, 0, "a non-negative integer")


def _whole(value, low: int, what: str) -> int:
    number = _from_text(value) if isinstance(value, str) else value
    if isinstance(number, int) and not isinstance(number, bool) and number.bit_length() > 62:
        raise ValueError(f"must be {what} odezoo can use, got one with {len(str(number))} digits")
    if not isinstance(number, bool) and isinstance(number, (int, float)) and math.isfinite(number) \
            and number == int(number) and number >= low:
        return int(number)
    raise ValueError(f"must be {what}, got {value!r}" if isinstance(value, str) else
                     f"must be {what}, got {_show(value)}")


class QuotedNumber(str):
    """A YAML value written as a quoted number (``epochs: "8"``): YAML reads it as text, and a
    field that needs a number refuses it (one rule: a number in a config file is written as a
    number; text is parsed as a number only where YAML cannot type it — ``1e-4``, ``8/255``)."""


def _refuse_quoted(value) -> None:
    if isinstance(value, QuotedNumber):
        raise ValueError(f"{str(value)!r} is quoted, so YAML reads it as text, not a number; write it without quotes")


class _StrictLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing duplicate keys and marking quoted numbers (`QuotedNumber`)."""


def _construct_mapping(loader, node, deep=False):
    seen = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: a key must be plain text, got {key!r}") from None
        if key in seen:
            raise ConfigError(f"line {key_node.start_mark.line + 1}: the key {key!r} appears twice in one mapping "
                              f"(first on line {seen[key]}); keep one of them")
        seen[key] = key_node.start_mark.line + 1
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


def _construct_str(loader, node):
    value = yaml.SafeLoader.construct_scalar(loader, node)
    if node.style in ("'", '"'):
        tag = loader.resolve(yaml.ScalarNode, value, (True, False))
        if tag in ("tag:yaml.org,2002:int", "tag:yaml.org,2002:float"):
            return QuotedNumber(value)
    return value


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_StrictLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


def read_yaml(text: str, where: str):
    """``text`` read as YAML by the strict rules (duplicate keys refused, quoted numbers marked);
    [`ConfigError`][odezoo.experiments.config.ConfigError] naming ``where`` otherwise."""
    try:
        return yaml.load(text, Loader=_StrictLoader)  # noqa: S506 — a SafeLoader subclass
    except ConfigError as error:
        raise ConfigError(f"{where}, {error}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{where} is not valid YAML: {error}") from None
    except RecursionError:
        raise ConfigError(f"{where} is nested too deeply to be a config") from None


def _plain_text(value):
    """Every `QuotedNumber` left in a validated config (where text was wanted) as a plain str."""
    if isinstance(value, dict):
        return {k: _plain_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain_text(v) for v in value]
    return str(value) if isinstance(value, QuotedNumber) else value


def _from_text(text: str):
    _refuse_quoted(text)
    try:
        return parse_number(text)
    except ValueError:
        return text


def _number(value) -> float:
    _refuse_quoted(value)
    return parse_number(value)  # "0.3", "1/3", "1e-4", numbers; bools, text and inf/nan refused


def _positive(value) -> float:
    number = _number(value)
    if number <= 0:
        raise ValueError(f"must be positive, got {value!r}")
    return number


def _non_negative(value) -> float:
    number = _number(value)
    if number < 0:
        raise ValueError(f"must be >= 0, got {value!r}")
    return number


def _bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"must be true or false, got {_show(value)}")


def _text(value) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"must be a non-empty string, got {_show(value)}")
    return value


def _choice(*options: str) -> Callable[[Any], str]:
    def check(value) -> str:
        if isinstance(value, str) and value in options:
            return value
        close = difflib.get_close_matches(str(value), options, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"must be one of {list(options)}, got {value!r}{hint}")
    return check


def _or_auto(check: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def either(value):
        if value == "auto":
            return "auto"
        try:
            return check(value)
        except ValueError as error:
            raise ValueError(f"{error} (or 'auto')") from None
    return either


def _list_of(check: Callable[[Any], Any], allow_empty: bool = True) -> Callable[[Any], list]:
    """A list; a single value or a comma-separated string (``"0.1,0.2"``) is accepted too."""
    def each(value) -> list:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        elif not isinstance(value, (list, tuple)):
            value = [value]
        out = []
        for i, item in enumerate(value):
            try:
                out.append(check(item))
            except ValueError as error:
                raise ValueError(f"item {i}: {error}") from None
        if not out and not allow_empty:
            raise ValueError("give at least one value")
        return out
    return each


def _scale(value):
    if isinstance(value, Mapping):
        return {str(k): _positive(v) for k, v in value.items()}
    return _positive(value)


_DEVICE = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")


def _device(value) -> str:
    if isinstance(value, str) and _DEVICE.match(value):
        return value
    raise ValueError(f"must be auto, cpu, cuda, cuda:N or mps, got {value!r}")


#: the longest run name (a folder name; file systems allow 255 bytes, and a sweep adds to it)
MAX_RUN_NAME = 100


def check_run_name(name) -> str:
    """A run name is one folder name under ``runs/``: no path separators, not ``.`` or ``..``,
    no control characters.  (``--out DIR`` chooses any folder explicitly.)"""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"a run name must be a non-empty string, got {name!r}")
    if "/" in name or "\\" in name or name in (".", "..") or any(ord(c) < 32 for c in name) \
            or Path(name).is_absolute() or name != name.strip():
        raise ValueError(f"a run name is one folder name under runs/ (letters, digits, '.', '_', '-'; no '/', "
                         f"'\\\\' or '..'), got {name!r}; use --out DIR to write somewhere else")
    if len(name) > MAX_RUN_NAME:
        raise ValueError(f"a run name is one folder name of at most {MAX_RUN_NAME} characters, got one of {len(name)} "
                         f"({name[:40]!r}...); choose a shorter name, or --out DIR")
    return name


def _type(check: Callable, base=Any):
    return Annotated[base, PlainValidator(check)]


Number = _type(_number, float)
Positive = _type(_positive, float)
NonNegative = _type(_non_negative, float)
Count = _type(positive_int, int)
NonNegativeCount = _type(non_negative_int, int)
Bool = _type(_bool, bool)
Text = _type(_text, str)
StepCount = _type(check_n_steps, int)
StepSize = _type(check_step_size, float)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)


# --------------------------------------------------------------------------- the schema
class SpecConfig(_Section):
    """One solver of a ``specs`` list (``method`` defaults to the solver's)."""
    method: Optional[Text] = None
    params: dict[str, Number] = {}
    n_steps: Optional[StepCount] = None
    step_size: Optional[StepSize] = None


#: which solver keys each mode reads
SOLVER_KEYS = {
    "fixed": {"mode", "method", "params", "n_steps", "step_size"},
    "smoothing": {"mode", "method", "params", "n_steps", "step_size", "distribution", "scale", "per_sample"},
    "switching": {"mode", "method", "n_steps", "step_size", "specs", "probs"},
    "ensemble": {"mode", "method", "n_steps", "step_size", "specs", "weights"},
}


def _mode(value) -> str:
    if isinstance(value, str) and value in SOLVER_KEYS:
        return value
    close = difflib.get_close_matches(str(value), SOLVER_KEYS, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ValueError(f"unknown solver mode {value!r}; choose fixed, switching, smoothing or ensemble{hint}")


class SolverConfig(_Section):
    mode: _type(_mode, str) = "fixed"
    method: Optional[Text] = None
    params: Optional[dict[str, Number]] = None
    n_steps: Optional[StepCount] = None
    step_size: Optional[StepSize] = None
    distribution: Optional[_type(_choice("normal", "uniform", "cauchy"), str)] = None
    scale: Optional[_type(_scale)] = None
    per_sample: Bool = False
    specs: Optional[list[SpecConfig]] = None
    probs: Optional[_type(_list_of(_number))] = None
    weights: Optional[_type(_list_of(_number))] = None

    @model_validator(mode="after")
    def _fits_the_mode(self):
        keys = SOLVER_KEYS[self.mode]
        given = {k for k in self.model_fields_set if getattr(self, k) not in (None, False)}
        stray = sorted(given - keys)
        if stray:
            raise ValueError(f"[{stray[0]}] does not apply to solver mode {self.mode!r} (it reads "
                             f"{', '.join(sorted(keys))}); remove it (--set solver.{stray[0]}=null) "
                             f"or change solver.mode")
        if self.mode in ("fixed", "smoothing") and not self.method:
            raise ValueError(f"solver mode {self.mode!r} needs a method, e.g. method: rk2_u")
        if self.mode in ("switching", "ensemble"):
            if not self.specs:
                raise ValueError(f"solver mode {self.mode!r} needs specs: [{{method: ..., params: {{...}}}}, ...]")
            for i, spec in enumerate(self.specs):
                if not (spec.method or self.method):
                    raise ValueError(f"[specs[{i}].method] is not given (and the solver gives no method to "
                                     f"default to)")
        return self


class OptimizerConfig(_Section):
    name: _type(_choice("rmsprop", "sgd", "adam"), str) = "rmsprop"
    lr: Positive = 1e-3
    momentum: NonNegative = 0.0
    weight_decay: NonNegative = 0.0
    nesterov: Bool = False

    @model_validator(mode="after")
    def _fits_the_optimizer(self):
        if self.name == "adam" and self.momentum:
            raise ValueError("[momentum] does not apply to adam (set it to 0 or choose sgd / rmsprop)")
        if self.nesterov and (self.name != "sgd" or not self.momentum):
            raise ValueError("[nesterov] needs name: sgd and a positive momentum")
        return self


class ScheduleConfig(_Section):
    name: _type(_choice("cyclic", "none"), str) = "cyclic"
    base_lr: Positive = 1e-5
    max_lr: Positive = 1e-3
    step_size_up: _type(_or_auto(positive_int)) = 2000
    step_size_down: Optional[_type(_or_auto(positive_int))] = None
    mode: _type(_choice("triangular", "triangular2", "exp_range"), str) = "triangular2"


class AdversarialConfig(_Section):
    kind: _type(_choice(*ADVERSARIAL_KINDS), str) = "none"
    eps: NonNegative = 0.3
    alpha: Optional[Positive] = None
    steps: Count = 7
    step_size: Optional[Positive] = None


class TrackRobustConfig(_Section):
    attack: _type(_choice(*ATTACKS), str) = "pgd"
    eps: NonNegative
    max_batches: Optional[Count] = None
    pgd_steps: Count = 7
    pgd_step_size: _type(_or_auto(_positive)) = "auto"


class EvalConfig(_Section):
    attacks: _type(_list_of(_choice(*ATTACKS))) = ["fgsm", "pgd"]
    eps: _type(_list_of(_non_negative)) = [0.1, 0.2, 0.3]
    pgd_steps: Count = 7
    pgd_step_size: _type(_or_auto(_positive)) = 2 / 255
    max_batches: Optional[Count] = None

    @model_validator(mode="after")
    def _has_eps(self):
        if self.attacks and not self.eps:
            raise ValueError("[eps] give at least one eps for the attacks (pixel units, e.g. [0.1, 0.3])")
        return self


class RecipeConfig(_Section):
    """The whole recipe config (see `DEFAULTS` and docs/recipes.md)."""
    name: _type(check_run_name, str) = "run"
    dataset: _type(_choice(*DATASETS), str) = "mnist-embedded"
    data_dir: Optional[Text] = None
    download: Bool = False
    model: _type(_choice(*MODELS), str) = "mnist"
    model_kwargs: dict[str, Any] = {}
    epochs: Count = 10
    batch_size: Count = 128
    seed: NonNegativeCount = 0
    device: _type(_device, str) = "auto"
    num_workers: NonNegativeCount = 0
    optimizer: OptimizerConfig = OptimizerConfig()
    schedule: Optional[ScheduleConfig] = ScheduleConfig()
    solver: SolverConfig = SolverConfig(method="rk2_u")
    resample: _type(_choice("epoch", "batch"), str) = "epoch"
    adversarial: AdversarialConfig = AdversarialConfig()
    track_robust: Optional[TrackRobustConfig] = None
    eval: EvalConfig = EvalConfig()
    subset: Optional[Count] = None
    loss_limit: Positive = 1e4
    precision: _type(_choice("fp32", "bf16"), str) = "fp32"

    @model_validator(mode="after")
    def _model_kwargs_fit_the_model(self):
        signature = inspect.signature(MODELS[self.model])
        known = {name: p.default for name, p in signature.parameters.items() if name != "solver"}
        checked = {}
        for key, value in self.model_kwargs.items():
            if key not in known:
                close = difflib.get_close_matches(str(key), list(known), n=1)
                hint = f"; did you mean {close[0]!r}?" if close else ""
                raise ValueError(f"[model_kwargs.{key}] unknown argument of model {self.model!r}{hint} "
                                 f"(it takes {sorted(known)})")
            default = known[key]
            try:
                checked[key] = _bool(value) if isinstance(default, bool) else \
                    positive_int(value) if isinstance(default, int) else value
            except ValueError as error:
                raise ValueError(f"[model_kwargs.{key}] {error}") from None
        self.model_kwargs = checked
        return self


# --------------------------------------------------------------------------- messages
def _models_in(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation can hold (through Optional, list, dict, ...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in get_args(annotation) for m in _models_in(arg)]


def _fields_at(loc: Sequence) -> tuple[str, list[str]]:
    """The dotted key of ``loc`` and the keys its section allows."""
    model: type[BaseModel] | None = RecipeConfig
    for part in loc:
        if isinstance(part, int) or model is None:
            continue
        field = model.model_fields.get(part)
        models = _models_in(field.annotation) if field is not None else []
        model = models[0] if models else None
    return _dotted(loc), sorted(model.model_fields) if model is not None else []


def _dotted(loc: Sequence) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _message(error: Mapping) -> str:
    loc = tuple(error["loc"])
    key = _dotted(loc) or "config"
    kind = error["type"]
    if kind == "extra_forbidden":
        section, known = _fields_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        hint = f" — did you mean {_dotted((*loc[:-1], close[0]))!r}?" if close else ""
        return f"{key}: unknown key{hint} (known keys{' of ' + section if section else ''}: {', '.join(known)})"
    if kind == "missing":
        return f"{key}: required, but not given"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        _, known = _fields_at(loc)
        keys = f" with keys {', '.join(known)}" if known else ""
        return f"{key}: must be a mapping{keys}, got {error.get('input')!r}"
    if kind == "list_type":
        return f"{key}: must be a list, got {error.get('input')!r}"
    message = error["msg"]
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message[len(prefix):] if message.startswith(prefix) else message
    if kind not in ("value_error", "assertion_error"):
        message += f", got {error.get('input')!r}"
    inner = re.match(r"^\[([^\]\s]+(?:\[\d+\][^\]\s]*)?)\] ", message)  # "[sub.key] ..." from a model check
    if inner:
        key = f"{_dotted(loc)}.{inner.group(1)}" if loc else inner.group(1)
        message = message[inner.end():]
    return f"{key}: {message}"


def _raise(error: ValidationError, where: str = "") -> NoReturn:
    lines = list(dict.fromkeys(_message(e) for e in error.errors()))
    head = f"invalid config{' ' + where if where else ''}"
    raise ConfigError(head + (": " + lines[0] if len(lines) == 1 else ":\n  " + "\n  ".join(lines))) from None


# --------------------------------------------------------------------------- loading
def deep_update(base: dict, update: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def parse_override(text: str) -> tuple[list[str], Any]:
    """``solver.scale=0.05`` -> (["solver", "scale"], 0.05) (values parsed as YAML)."""
    key, sep, value = text.partition("=")
    keys = key.strip().split(".")
    if not sep or not key.strip() or not all(keys):
        raise ConfigError(f"--set expects key.sub=value, got {text!r}")
    parsed = read_yaml(value, f"--set {key}")
    if isinstance(parsed, str) and not isinstance(parsed, QuotedNumber):
        try:  # YAML 1.1 reads "1e-4" as a string
            parsed = float(parsed)
        except ValueError:
            pass
    return keys, parsed


def load_config(path: str | None, overrides: Sequence[str] = (), **flags) -> dict:
    """DEFAULTS, updated by the YAML file at ``path``, the ``--set`` ``overrides`` and the
    command-line ``flags`` (None: not given), then checked by
    [`validate_config`][odezoo.experiments.config.validate_config].
    Raises [`ConfigError`][odezoo.experiments.config.ConfigError]."""
    cfg = copy.deepcopy(DEFAULTS)
    if path:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(f"config file not found: {path} (configs live in recipes/configs/)") from None
        except IsADirectoryError:
            raise ConfigError(f"config {path} is a folder; give a YAML file (e.g. recipes/configs/"
                              f"mnist_rk2_fixed.yaml)") from None
        except UnicodeDecodeError as error:
            raise ConfigError(f"config file {path} is not UTF-8 text (byte {error.start}); save it as UTF-8") from None
        except OSError as error:
            raise ConfigError(f"cannot read config file {path}: {error.strerror}") from None
        loaded = read_yaml(text, f"config file {path}")
        if loaded is None:
            raise ConfigError(f"config file {path} is empty (or only comments); write the settings into it, or "
                              f"train the built-in defaults explicitly with --defaults instead of --config")
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys (name: ..., solver: ...), "
                              f"got {type(loaded).__name__}")
        cfg = deep_update(cfg, loaded)
        if isinstance(loaded.get("solver"), dict):  # a solver is replaced whole: defaults must not leak into it
            cfg["solver"] = copy.deepcopy(loaded["solver"])
        if cfg.get("name") == "run":
            cfg["name"] = Path(path).stem
    for text in overrides:
        keys, value = parse_override(text)
        node = cfg
        for depth, key in enumerate(keys[:-1]):
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                if node is None:  # an empty optional section (track_robust: null) can be filled in
                    node = _parent(cfg, keys[:depth])[key] = {}
                else:
                    raise ConfigError(f"--set {text}: {'.'.join(keys[:depth + 1])} is not a section "
                                      f"(it is {node!r}), so it has no key {keys[depth + 1]!r}")
        node[keys[-1]] = value
    for key, value in flags.items():
        if value is not None:
            cfg[key] = value
    return validate_config(cfg)


def _parent(cfg: dict, keys: Sequence[str]) -> dict:
    node = cfg
    for key in keys:
        node = node[key]
    return node


def validate_config(cfg: Mapping, where: str = "") -> dict:
    """Check a whole recipe config and return it normalized (numbers parsed, lists made).

    ``cfg`` is merged over `DEFAULTS` first (a key it leaves out takes the
    default).
    Besides the schema, the solver is built once (a singular or unknown solver fails here,
    not after data loading).  Raises [`ConfigError`][odezoo.experiments.config.ConfigError] naming every problem by
    its
    dotted key; ``where`` (e.g. "in runs/x/best.pt") is added to the message."""
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"a config must be a mapping, got {type(cfg).__name__}")
    merged = deep_update(DEFAULTS, dict(cfg))
    if isinstance(cfg.get("solver"), dict):
        merged["solver"] = copy.deepcopy(cfg["solver"])
    try:
        model = RecipeConfig.model_validate(merged)
    except ValidationError as error:
        _raise(error, where)
    except (RecursionError, OverflowError) as error:
        raise ConfigError(f"invalid config{' ' + where if where else ''}: {type(error).__name__}: it holds a value "
                          f"too deep or too large to be a setting") from None
    out = model.model_dump(exclude_unset=True)
    for key in DEFAULTS:   # every top-level key stays, even where it equals the default
        out.setdefault(key, getattr(model, key) if not isinstance(getattr(model, key), BaseModel)
                       else getattr(model, key).model_dump(exclude_unset=True))
    out = _plain_text(out)
    try:
        meta_solver_from_config(out["solver"], seed=out["seed"])
    except ConfigError as error:
        raise ConfigError(f"invalid config{' ' + where if where else ''}: {error}") from None
    except ValueError as error:
        raise ConfigError(f"invalid config{' ' + where if where else ''}: solver: {error}") from None
    return out


def config_differences(old: Mapping, new: Mapping, prefix: str = "") -> dict[str, tuple[Any, Any]]:
    """``{dotted key: (old value, new value)}`` wherever two configs differ."""
    out = {}
    for key in dict.fromkeys([*old, *new]):
        a, b = old.get(key), new.get(key)
        dotted = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            out.update(config_differences(a, b, dotted))
        elif a != b:
            out[dotted] = (a, b)
    return out


def flag(check):
    """An argparse ``type=`` from a config check, so a command-line flag gets the config's message."""
    import argparse

    def convert(text):
        try:
            return check(text)
        except ValueError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    convert.__name__ = check.__name__
    return convert


class RecipeExit(SystemExit):
    """The exit [`fail`][odezoo.experiments.config.fail] raises: status ``code``, and the ``message`` it printed,
    so that
    whoever ran the recipe as a function (a sweep's job) can report what went wrong."""

    def __init__(self, message: str, code: int = 2):
        super().__init__(code)
        self.message = message


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``error: message`` to stderr and exit with ``code`` (for recipe scripts)."""
    print(f"error: {message}", file=sys.stderr)
    raise RecipeExit(message, code)


# --------------------------------------------------------------------------- solvers
def _spec(data: Mapping[str, Any], defaults: Mapping[str, Any]) -> SolverSpec:
    data = {**defaults, **{k: v for k, v in data.items() if v is not None}}
    return SolverSpec(data["method"], {k: parse_number(v) for k, v in (data.get("params") or {}).items()},
                      step_size=data.get("step_size"), n_steps=data.get("n_steps"))


def _check_names(key: str, method: str, params: Mapping[str, Any]) -> None:
    """Unknown methods and parameter names, by dotted key with a did-you-mean."""
    from odezoo import families
    from odezoo._torchdiffeq_bridge import TORCHDIFFEQ_METHODS

    known = {**{name: list(f.params) for name, f in families().items()}, **{m: [] for m in TORCHDIFFEQ_METHODS}}
    method_key = f"{key}.method" if key != "solver" or method else key
    if method not in known:
        close = difflib.get_close_matches(str(method), known, n=1)
        hint = f" — did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"{method_key}: unknown method {method!r}{hint} (registered: {', '.join(sorted(known))})")
    for name in params:
        if name not in known[method]:
            close = difflib.get_close_matches(str(name), known[method], n=1)
            hint = f" — did you mean '{key}.params.{close[0]}'?" if close else ""
            takes = f"it takes {', '.join(known[method])}" if known[method] else "it takes no parameters"
            raise ConfigError(f"{key}.params.{name}: unknown parameter of {method}{hint} ({takes})")


def meta_solver_from_config(cfg: Mapping[str, Any], seed: int | None = None) -> MetaSolver:
    """A MetaSolver from a config mapping, e.g.::

        mode: smoothing          # fixed | switching | smoothing | ensemble
        method: rk2_u
        params: {u: 0.5}         # fixed: the solver; smoothing: the center
        n_steps: 8
        distribution: normal     # smoothing: normal | uniform | cauchy (default: the family's)
        scale: 0.0125
        per_sample: false
        specs: [{method: rk2_u, params: {u: 0.5}}, ...]   # switching / ensemble
        probs: [0.5, 0.5]        # switching;  weights: [...] for ensemble

    The mapping is checked against the solver schema first (unknown keys, keys that do not
    apply to the mode, bad values): a [`ConfigError`][odezoo.experiments.config.ConfigError] (a ``ValueError``)
    names the key.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"solver: must be a mapping with keys mode, method, ..., got {cfg!r}")
    try:
        checked = SolverConfig.model_validate(dict(cfg))
    except ValidationError as error:
        lines = [_message({**e, "loc": ("solver", *e["loc"])}) for e in error.errors()]
        raise ConfigError("; ".join(dict.fromkeys(lines))) from None
    cfg = checked.model_dump(exclude_none=True)
    mode = cfg["mode"]
    if mode in ("fixed", "smoothing"):
        _check_names("solver", cfg["method"], cfg.get("params") or {})
    else:
        for i, spec in enumerate(cfg["specs"]):
            _check_names(f"solver.specs[{i}]", spec.get("method") or cfg.get("method"), spec.get("params") or {})
    grid = {k: cfg[k] for k in ("n_steps", "step_size") if cfg.get(k) is not None}
    if mode == "fixed":
        return MetaSolver.fixed(_spec(cfg, grid))
    if mode == "smoothing":
        return MetaSolver.smoothing(cfg["method"], center=cfg.get("params") or {},
                                    distribution=cfg.get("distribution"), scale=cfg.get("scale"),
                                    per_sample=cfg["per_sample"], seed=seed, **grid)
    specs = [_spec(s, {"method": cfg.get("method"), **grid}) for s in cfg["specs"]]
    if mode == "switching":
        return MetaSolver.switching(specs, probs=cfg.get("probs"), seed=seed)
    return MetaSolver.ensemble(specs, weights=cfg.get("weights"))


def parse_solver_grid(text: str, n_steps: Sequence[int] = (8,)) -> list[SolverSpec]:
    """``"rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3;euler"`` × n_steps -> SolverSpecs.

    Each ``;``-separated item is ``method`` or ``method:param=v1,v2,...[:param2=...]``; the
    values of several parameters combine as a product.  An adaptive method (``dopri5``, ...)
    chooses its own steps: it appears once, without a step count.
    """
    steps = [check_n_steps(s) for s in n_steps]
    specs = []
    for item in filter(None, (part.strip() for part in text.split(";"))):
        method, *assignments = item.split(":")
        grids = []
        for assignment in assignments:
            name, sep, values = assignment.partition("=")
            if not sep:
                raise ValueError(f"cannot parse {assignment!r} in {item!r}: expected param=v1,v2")
            grids.append([(name.strip(), v) for v in parse_number_list(values)])
        for combo in itertools.product(*grids) if grids else [()]:
            if is_adaptive(method.strip()):
                specs.append(SolverSpec(method.strip(), dict(combo)))
                continue
            for count in steps:
                specs.append(SolverSpec(method.strip(), dict(combo), n_steps=count))
    if not specs:
        raise ValueError(f"no solvers in {text!r}; example: 'rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3'")
    return specs

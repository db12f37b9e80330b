"""``odezoo reproduce``: reproduce the paper's figures and tables (Gusak et al., Meta-Solver for Neural ODEs) under one
named evaluation protocol per experiment.

    odezoo reproduce table1 --scale small                      # CPU; see docs/results.md for times
    odezoo reproduce table1 --scale paper --data-dir ~/data    # hours on one GPU
    odezoo reproduce fig5 --scale small --dry-run    # about 2 minutes on 2 busy cores (CI); runs/reproduce/small-dry-run
    odezoo report                                                        # tables + figures from docs/results/

Experiments: fig3a fig3b fig4 fig5 table1 table2 variants (and all).  Before any training the
experiment prints the protocol it will run (odezoo.experiments.protocol: every attack by its
full name, ε, how many test images) and checks the optional dependencies.  Every seed of every
arm is then trained (or reused from --out/<experiment>/runs/, an interrupted run resumes) and
evaluated with that protocol on the same test images, with the gradient-masking checks.  A
model or result is reused only when it was made with the same settings and protocol: a
finished run trained otherwise fails its job with the differences and is left as it is, and
a dry run has its own folder (runs/reproduce/<scale>-dry-run).

The data that ships goes to --results/<experiment>/ (default docs/results/, for a dry run
--out/results/):  per_seed.csv (one row per model × attack × ε: experiment, arm, seed, attack,
eps, n_examples, accuracy, train_seconds, ...), protocol.json, setup.json, checks.csv and, for
fig3b, per_epoch.csv (validation curves).  The tables, figure, summary.md and claims.csv (the
paper's claims the experiment file lists, judged by the verdict rule of docs/results.md) are
rebuilt from those files alone by the same code that ``report`` runs, so ``report`` on a fresh
copy of them reproduces every table and figure exactly.

Scales: ``paper`` uses the paper's data, epochs and step counts (full MNIST / CIFAR-10 via
--data-dir) and attacks every test image.  ``small`` runs on 2 CPU cores: MNIST experiments on
the 5,000 embedded digits (6 epochs, 4 solver steps; 1,000 test digits), CIFAR-10 experiments
on a reduced setting — a width-16 CIFAR-10 network, 2 solver steps, 4 epochs — on real CIFAR-10
(5,000 training images) when --data-dir holds it, otherwise on the embedded digits padded to
32×32×3 (a stand-in, labelled as such everywhere: not CIFAR-10).  Attacks: the first 1,000
test images, standard AutoAttack on the first 500.
"""
from __future__ import annotations

import copy
import dataclasses
import hashlib
import importlib.util
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
import yaml

from odezoo.experiments.config import fail
from odezoo.experiments.io import IntegrityError, RunFolderBusy, load_sealed_json, read_jsonl, run_folder_lock
from odezoo.experiments.report import ReportError, build_report, write_report

#: the paper's configs (the base of every experiment's runs)
CONFIGS = Path(__file__).resolve().parents[3] / "recipes" / "configs"

# optional module -> the one install line that provides it
OPTIONAL = {"torchattacks": "pip install 'odezoo[attacks]'", "advertorch": "pip install 'odezoo[recipes]'",
            "torchvision": "pip install 'odezoo[recipes]'", "matplotlib": "pip install 'odezoo[recipes]'",
            "scipy": "pip install 'odezoo[recipes]'", "yaml": "pip install 'odezoo[recipes]'",
            "mlxtend": "pip install 'odezoo[recipes]'", "pyautoattack": "pip install 'odezoo[crosscheck]'"}


def check_dependencies(needs_autoattack: bool, needs_crosscheck: bool = False) -> None:
    """Exit with the install line before any training when an optional dependency is missing
    (torchattacks when an attack needs it, pyautoattack when the masking checks run: they include
    the AutoAttack cross-check; --no-checks skips both)."""
    needed = {"torchattacks": needs_autoattack or needs_crosscheck, "pyautoattack": needs_crosscheck}
    missing = [m for m in OPTIONAL if needed.get(m, True) and importlib.util.find_spec(m) is None]
    if missing:
        lines = sorted({OPTIONAL[m] for m in missing})
        raise SystemExit(f"odezoo reproduce needs {', '.join(missing)} (nothing was trained). Install with: "
                         + " and ".join(lines))


# --------------------------------------------------------------------------- experiments as data
@dataclass
class Arm:
    """One training configuration of an experiment (trained once per seed)."""
    label: str
    solver: dict
    resample: str = "epoch"
    adversarial: dict = field(default_factory=lambda: {"kind": "none"})
    track: dict | None = None

    @property
    def run_name(self) -> str:
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in self.label)

    def solver_text(self) -> str:
        s = self.solver
        inside = [f"{k}={v:g}" for k, v in (s.get("params") or {}).items()]
        inside += [f"{s['n_steps']} step{'s' if s['n_steps'] > 1 else ''}"] if s.get("n_steps") else []
        solver = f"{s['method']}({', '.join(inside)})" if inside else s["method"]
        if s.get("mode") == "smoothing":
            draw = "per sample" if s.get("per_sample") else f"per {self.resample}"
            return f"smoothing {solver}, {s.get('distribution') or 'default'} σ={s.get('scale')}, drawn {draw}"
        return solver


#: the declarative experiments: one YAML file each (recipes/experiments/<name>.yaml)
EXPERIMENTS_DIR = Path(__file__).resolve().parents[3] / "recipes" / "experiments"
#: the keys an experiment file has (``x_axis`` may be null)
_KEYS = ("title", "data", "eps", "reference", "x_axis", "seeds", "paper", "arms", "dry_run")
#: the keys an experiment file may add: the paper's claims it tests and how it differs from the paper
_OPTIONAL_KEYS = ("claims", "differences")
#: setup differences several experiments share, by group name (an experiment lists the groups it uses)
SHARED_DIFFERENCES = Path("shared") / "setup_differences.yaml"
_ARM_KEYS = ("label", "solver", "resample", "adversarial", "track")
#: numbers an arm may write as text YAML cannot type (``8/255``), read by the one number parser
_NUMBERS = {("adversarial", "eps"), ("adversarial", "alpha"), ("track", "eps"), ("track", "pgd_step_size"),
            ("solver", "scale")}


@dataclass(frozen=True)
class Experiment:
    """One of the paper's figures or tables, as its file in recipes/experiments/ declares it."""
    name: str
    title: str
    data: str                      # mnist | cifar: the base config of every arm
    eps: tuple                     # the protocol's ε
    reference: str | None          # the arm every other arm is paired with (same seed)
    x_axis: str | None             # "u" or "eps": what the figure plots against
    seeds: int                     # seeds at small scale (the paper scale runs 3, a dry run 2)
    paper: object                  # what the paper reports: a sentence or {arm: {attack: (mean, SE)}}
    arms: dict                     # scale -> [arm mappings]
    dry_arms: dict                 # scale -> [labels a dry run trains]
    dry_set: dict                  # dotted key -> value a dry run sets in every arm
    claims: tuple = ()             # the paper's claims it tests (odezoo.experiments.report.parse_claims)
    differences: tuple = ()        # how it differs from the paper (odezoo.experiments.report.parse_differences)

    def arms_for(self, scale: str, dry_run: bool, smoothing_resample: str) -> list[Arm]:
        arms = [_arm(a, smoothing_resample) for a in self.arms[scale]]
        if not dry_run:
            return arms
        chosen = [a for label in self.dry_arms[scale] for a in arms if a.label == label]
        for arm in chosen:
            for key, value in self.dry_set.items():
                section, _, entry = key.partition(".")
                setattr(arm, section, {**getattr(arm, section), entry: value})
        return chosen


def _arm(data: dict, smoothing_resample: str) -> Arm:
    data = copy.deepcopy(data)
    if data.get("resample") == "$smoothing_resample":  # the tables' smoothing arm: --smoothing-resample
        data["resample"] = smoothing_resample
    return Arm(**data)


def _bad(path: Path, message: str):
    return ValueError(f"experiment file {path}: {message}")


def load_experiment(name: str, folder: Path | None = None) -> Experiment:
    """The experiment ``name`` from ``folder``/<name>.yaml (default `EXPERIMENTS_DIR`), checked:
    every key known and present, arms with unique labels, the reference and the dry-run arms among
    them, numbers parsed by the one number parser; ``ValueError`` naming the file otherwise."""
    path = Path(folder or EXPERIMENTS_DIR) / f"{name}.yaml"
    try:
        return _load_experiment(name, path, folder)
    except (TypeError, AttributeError, KeyError) as error:
        raise _bad(path, f"malformed ({type(error).__name__}: {error})") from None
    except ValueError as error:
        if str(path) in str(error):
            raise
        raise _bad(path, str(error)) from None


def _load_experiment(name: str, path: Path, folder: Path | None) -> Experiment:
    from odezoo.experiments.config import ConfigError, read_yaml
    from odezoo.parsing import parse_number

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise _bad(path, f"missing; the experiments are {', '.join(experiment_names(folder)) or 'none'}") from None
    except (UnicodeDecodeError, IsADirectoryError) as error:
        raise _bad(path, f"unreadable ({type(error).__name__})") from None
    try:
        data = read_yaml(text, f"experiment file {path}")
    except ConfigError as error:
        raise ValueError(str(error)) from None
    if not isinstance(data, dict):
        raise _bad(path, "must hold a mapping (title: ..., arms: ...)")
    unknown, missing = sorted(set(data) - set(_KEYS) - set(_OPTIONAL_KEYS)), [k for k in _KEYS if k not in data]
    if unknown or missing:
        raise _bad(path, f"unknown key(s) {unknown}, missing key(s) {missing} (keys: {', '.join(_KEYS)}; "
                         f"optional: {', '.join(_OPTIONAL_KEYS)})")
    arms = data["arms"] if isinstance(data["arms"], dict) else {"small": data["arms"], "paper": data["arms"]}
    if sorted(arms) != ["paper", "small"]:
        raise _bad(path, "arms is a list, or a mapping with the keys small and paper")
    for scale, items in arms.items():
        if not isinstance(items, list) or not items:
            raise _bad(path, f"arms ({scale}) must be a non-empty list")
        labels = []
        for arm in items:
            if not isinstance(arm, dict) or "label" not in arm or "solver" not in arm or set(arm) - set(_ARM_KEYS):
                raise _bad(path, f"an arm has the keys {', '.join(_ARM_KEYS)} (label and solver required): {arm!r}")
            labels.append(str(arm["label"]))
            for section, key in _NUMBERS:
                if isinstance(arm.get(section), dict) and key in arm[section]:
                    arm[section][key] = parse_number(arm[section][key])
            arm["solver"]["params"] = {k: parse_number(v) for k, v in (arm["solver"].get("params") or {}).items()}
            arm["label"] = str(arm["label"])
        if len(set(labels)) != len(labels):
            raise _bad(path, f"arm labels repeat ({scale}): {labels}")
        if data["reference"] is not None and data["reference"] not in labels:
            raise _bad(path, f"the reference arm {data['reference']!r} is not among the {scale} arms {labels}")
    dry = data["dry_run"] or {}
    dry_arms = dry.get("arms")
    dry_arms = dry_arms if isinstance(dry_arms, dict) else {"small": dry_arms, "paper": dry_arms}
    for scale in ("small", "paper"):
        labels = [a["label"] for a in arms[scale]]
        if not dry_arms.get(scale) or any(label not in labels for label in dry_arms[scale]):
            raise _bad(path, f"dry_run.arms ({scale}) must name some of the arms {labels}")
    paper = data["paper"]
    if isinstance(paper, dict):
        paper = {arm: {attack: tuple(v) for attack, v in attacks.items()} for arm, attacks in paper.items()}
    seeds = data["seeds"]
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 2:
        raise _bad(path, f"seeds must be a whole number >= 2, got {seeds!r}")
    if data["data"] not in ("mnist", "cifar"):
        raise _bad(path, f"data must be mnist or cifar, got {data['data']!r}")
    from odezoo.experiments.report import parse_claims, parse_differences

    labels = {scale: [str(a["label"]) for a in items] for scale, items in arms.items()}
    claims = parse_claims(data.get("claims"), f"experiment file {path}", labels)
    differences = parse_differences(data.get("differences"), f"experiment file {path}",
                                    _shared_differences(Path(folder or EXPERIMENTS_DIR)))
    return Experiment(name, str(data["title"]), data["data"], tuple(parse_number(e) for e in data["eps"]),
                      data["reference"], data["x_axis"], seeds, paper, arms,
                      {k: [str(v) for v in vs] for k, vs in dry_arms.items()}, dict(dry.get("set") or {}),
                      claims, differences)


def _shared_differences(folder: Path) -> dict:
    """The shared setup-difference groups of ``folder`` (`SHARED_DIFFERENCES`; none when absent)."""
    from odezoo.experiments.config import ConfigError, read_yaml

    path = folder / SHARED_DIFFERENCES
    if not path.exists():
        return {}
    try:
        groups = read_yaml(path.read_text(encoding="utf-8"), f"setup differences {path}")
    except ConfigError as error:
        raise ValueError(str(error)) from None
    if not isinstance(groups, dict) or not all(isinstance(v, list) for v in groups.values()):
        raise ValueError(f"setup differences {path}: a mapping of group name -> list of differences")
    return groups


def experiment_names(folder: Path | None = None) -> tuple[str, ...]:
    """Every experiment file's name, sorted."""
    folder = Path(folder or EXPERIMENTS_DIR)
    return tuple(sorted(p.stem for p in folder.glob("*.yaml"))) if folder.is_dir() else ()


EXPERIMENTS = experiment_names()


def experiment(name: str) -> Experiment:
    """:func:`load_experiment`, stopping with the message on a bad file."""
    try:
        return load_experiment(name)
    except ValueError as error:
        fail(str(error))


def arms_of(name: str, ctx) -> list[Arm]:
    """The arms the context trains for experiment ``name`` (its scale, dry run, smoothing resample)."""
    return experiment(name).arms_for(ctx.scale, ctx.dry_run, ctx.smoothing_resample)


# --------------------------------------------------------------------------- settings
def runs_folder(args) -> Path:
    """--out, or runs/reproduce/<scale>; a dry run's default is its own folder (runs/reproduce/
    <scale>-dry-run), never the real runs' (its tiny models must not stand in for theirs)."""
    if args.out:
        return Path(args.out)
    return Path("runs") / "reproduce" / (args.scale + ("-dry-run" if args.dry_run else ""))


class Context:
    def __init__(self, args, launcher=None):
        from odezoo.experiments.sweep import Launcher

        from odezoo.experiments.training import resolve_device

        self.scale = args.scale
        self.dry_run = args.dry_run
        self.data_dir = args.data_dir
        self.device = resolve_device(args.device)
        self.out = runs_folder(args)
        self.results = Path(args.results) if args.results else (self.out / "results" if args.dry_run
                                                                else Path("docs") / "results")
        self.seeds_flag = args.seeds
        self.quiet = not args.verbose
        self.checks = not args.no_checks
        #: the cross-check of the attack libraries on one model per experiment: (images, AutoAttack
        #: iterations per component, Square queries) — the standard budget, a tiny one in a dry run
        self.crosscheck = (8, 3, 10) if args.dry_run else (1000 if args.scale == "paper" else 100, 100, 5000)
        self.protocol_name = args.protocol
        self.smoothing_resample = args.smoothing_resample
        self.collect = args.collect
        self.launcher = launcher or Launcher()


    def seeds_for(self, name: str) -> list[int]:
        if self.seeds_flag:
            return [int(s) for s in self.seeds_flag.split(",")]
        n = 2 if self.dry_run else (experiment(name).seeds if self.scale == "small" else 3)
        return list(range(n))

    @property
    def cifar_is_real(self) -> bool:
        return self.scale == "paper" or bool(self.data_dir and (Path(self.data_dir) / "cifar-10-batches-py").is_dir())

    def base_config(self, data: str) -> dict:
        if data == "mnist":
            if self.scale == "paper":
                cfg = yaml.safe_load(_config("mnist_paper.yaml").read_text())
                cfg["data_dir"] = self.data_dir
            else:
                cfg = yaml.safe_load(_config("mnist_rk2_fixed.yaml").read_text())
                cfg.update(epochs=6)
                cfg["solver"]["n_steps"] = 4
            return cfg
        cfg = yaml.safe_load(_config("cifar10_rk2_standard.yaml").read_text())
        cfg["data_dir"] = self.data_dir
        if self.scale == "small":
            cfg.update(epochs=4, batch_size=64, model_kwargs={"width": 16})
            cfg["schedule"].update(base_lr=1e-4, max_lr=0.05, step_size_up="auto", step_size_down="auto")
            cfg["solver"]["n_steps"] = 2
            if self.cifar_is_real:
                cfg["subset"] = 5000
            else:
                cfg["dataset"] = "mnist-embedded-rgb32"
        return cfg

    def config(self, data: str, arm: Arm, seed: int) -> dict:
        from odezoo.experiments.config import deep_update

        cfg = self.base_config(data)
        cfg = deep_update(cfg, {"seed": seed, "resample": arm.resample, "adversarial": arm.adversarial,
                                "track_robust": arm.track})
        cfg["solver"] = {"n_steps": cfg["solver"].get("n_steps"), **arm.solver}  # only the step count carries over
        if self.dry_run:
            cfg.update(epochs=1, subset=64, batch_size=16)
        cfg["device"] = str(self.device)
        return cfg

    def protocol(self, name: str):
        """The experiment's protocol: the named one at the experiment's ε, with this scale's counts."""
        from odezoo.experiments.protocol import get_protocol

        spec = experiment(name)
        if self.scale == "paper":
            counts = dict(n_examples=None, n_autoattack=None, n_checks=1000)
        else:
            counts = dict(n_examples=1000, n_autoattack=500, n_checks=256)
        protocol = get_protocol(self.protocol_name, eps=spec.eps, **counts)
        if self.dry_run:  # the same kinds of attack with tiny budgets (their names say so): not a result
            protocol = protocol.replace(attacks=tuple(a.shrunk() for a in protocol.attacks), eps=spec.eps[-1:],
                                        n_examples=16, n_autoattack=8, n_checks=8)
        return protocol


class _Config:
    def __init__(self, name):
        self.path = CONFIGS / name

    def read_text(self):
        if not self.path.is_file():
            fail(f"odezoo reproduce reads the paper's configs from {CONFIGS}, which holds no {self.path.name}; "
                 f"run it from a clone of the odezoo repository")
        return self.path.read_text(encoding="utf-8")


def _config(name):
    return _Config(name)


def data_label(dataset: str, subset) -> str:
    return {"mnist-embedded": "MNIST, 5,000 embedded digits (3,500 train, 1,000 test)",
            "mnist-embedded-rgb32": "stand-in: MNIST digits padded to 32×32×3 (not CIFAR-10)",
            "mnist": "MNIST (full)",
            "cifar10": "CIFAR-10" + (f" ({subset:,} images per split)" if subset else "")}[dataset]


# --------------------------------------------------------------------------- one model: a job
def run_config(name: str, cfg: dict) -> dict:
    """The train.py config of the run ``name`` (the keys train.py knows, and the run's name)."""
    from odezoo.experiments.config import DEFAULTS

    return {**{k: v for k, v in cfg.items() if k in DEFAULTS}, "name": name}


def trained_model(folder: Path, name: str, cfg: dict, device: torch.device, quiet: bool = True):
    """Train (or reuse / resume) one run; return the best model, its MetaSolver, test loader, run dir.
    A finished run trained with other settings is not reused: train.py stops with the differences."""
    from odezoo.experiments.commands import train
    from odezoo.experiments.config import meta_solver_from_config
    from odezoo.experiments.data import get_datasets, make_loaders
    from odezoo.experiments.io import load_checkpoint
    from odezoo.experiments.models import build_model

    run_dir = folder / "runs" / name
    cfg = run_config(name, cfg)
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    config_path = run_dir.parent / f"{name}.yaml"
    config_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    flags = ["--config", str(config_path), "--out", str(run_dir), "--no-eval", "--reuse-finished"]
    flags += ["--quiet"] if quiet else []
    flags += ["--resume"] if (run_dir / "checkpoint.pt").exists() else []
    train.main(flags)
    state = load_checkpoint(run_dir / "best.pt", map_location=device)
    meta = meta_solver_from_config(cfg["solver"], seed=cfg["seed"])
    model = build_model(cfg["model"], meta, **cfg.get("model_kwargs", {})).to(device)
    model.load_state_dict(state["model"])
    model.eval()
    splits = get_datasets(cfg["dataset"], data_dir=cfg.get("data_dir"), seed=cfg["seed"])
    loaders = make_loaders(splits, batch_size=cfg["batch_size"], seed=cfg["seed"], subset=cfg.get("subset"))
    return model, meta, loaders.test, run_dir


def train_seconds(run_dir: Path) -> float:
    """Training wall time of a run: the per-epoch ``seconds`` of metrics.jsonl (training plus
    the clean validation pass; the robust tracking of fig3b is not included), summed."""
    try:
        return sum(record["seconds"] for record in read_jsonl(run_dir / "metrics.jsonl"))
    except IntegrityError as error:
        fail(str(error))


def masking_rows(protocol, model, meta, loader, name, arm, seed, device, dry_run=False) -> list[dict]:
    """Gradient-masking checks on the model as evaluated (the deterministic evaluation solver),
    plus, for a randomized solver, the determinism check on the solver as deployed."""
    from odezoo.experiments.masking import gradient_masking_checks
    from odezoo.experiments.protocol import take_examples

    batches = take_examples(loader, protocol.n_checks, device)
    budget = dict(pgd_steps=2, restarts=1, noise_samples=2) if dry_run else {}
    with meta.evaluating():
        checks = gradient_masking_checks(model, batches, protocol.eps, device=device, seed=protocol.seed, **budget)
    rows = [{"experiment": name, "arm": arm.label, "seed": seed, "check": c.name, "status": c.status,
             "detail": c.detail, "n_examples": sum(len(y) for _, y in batches)} for c in checks]
    if meta.randomized:
        (deployed,) = gradient_masking_checks(model, batches, protocol.eps, device=device,
                                              before_forward=meta.resample, only=("deterministic-forward",))
        rows.append({"experiment": name, "arm": arm.label, "seed": seed, "check": "deployed-solver-randomized",
                     "status": "info", "detail": deployed.detail + " — the protocol evaluates the deterministic "
                     "evaluation solver (the center), as the paper does; these numbers do not cover the randomized "
                     "deployment", "n_examples": sum(len(y) for _, y in batches)})
    return rows


def crosscheck_rows(model, loader, protocol, budget, name, arm, seed, device) -> list[dict]:
    """The attack libraries on one model's first test images at the protocol's largest ε: PGD (the
    paper's 7 steps of 2/255, from the clean image) by advertorch, torchattacks and odezoo's own
    loop, and standard AutoAttack by torchattacks' components and by the authors' pyautoattack.
    ``budget``: (images, AutoAttack iterations per component, Square queries)."""
    n_images, steps, queries = budget
    from odezoo.experiments.crosscheck import autoattack_agreement, pgd_agreement
    from odezoo.experiments.protocol import take_examples

    batches = take_examples(loader, n_images, device)
    x, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    eps = max(protocol.eps)
    base = {"experiment": name, "arm": arm.label, "seed": seed, "eps": eps, "n_images": len(y)}
    pgd = pgd_agreement(model, x, y, eps, step_size=2 / 255, steps=7)
    rows = [{**base, "check": "pgd-7x2/255 from the clean image", "library": lib, "accuracy": pgd[f"accuracy_{lib}"],
             "max_pixel_difference_to_advertorch": 0.0 if lib == "advertorch" else pgd[f"max_diff_advertorch_{lib}"]}
            for lib in ("advertorch", "torchattacks", "odezoo")]
    aa = autoattack_agreement(model, x, y, eps, steps=steps, square_queries=queries, seed=protocol.seed)
    for lib, only in (("torchattacks", "only_torchattacks_fooled"), ("pyautoattack", "only_reference_fooled")):
        rows.append({**base, "check": aa["attack"], "library": lib,
                     "accuracy": aa["accuracy_torchattacks" if lib == "torchattacks" else "accuracy_reference"],
                     "images_only_this_library_fooled": aa[only],
                     "difference_torchattacks_minus_pyautoattack": aa["difference"],
                     "difference_ci95": aa["difference_ci95"]})
    return rows


def tracked_attack(track: dict) -> str:
    """The registry name of the attack an arm tracks on validation images each epoch."""
    from odezoo.experiments.protocol import resolve_attacks
    from odezoo.parsing import parse_number

    size = track.get("pgd_step_size", "auto")
    (attack,) = resolve_attacks([track.get("attack", "pgd")], pgd_steps=int(track.get("pgd_steps", 7)),
                                pgd_step_size=size if size in ("auto", None) else parse_number(str(size)))
    return attack.name


def protocol_check_rows(result, name, arm, seed) -> list[dict]:
    """The masking check a protocol's own results allow: a gradient-free attack (Square) fooling
    examples every gradient-based attack missed."""
    from odezoo.experiments.masking import gradient_free_check

    if not any(a.gradient_free for a in result.protocol.attacks):
        return []  # an older protocol without a gradient-free attack (its setup says so)
    check = gradient_free_check(result.correct, result.protocol.attacks)
    n = min(result.n_of(a.name, e) for a in result.protocol.attacks if a.gradient_free for e in result.protocol.eps)
    return [{"experiment": name, "arm": arm.label, "seed": seed, "check": check.name, "status": check.status,
             "detail": check.detail, "n_examples": n}]


def result_path(run_dir: Path, protocol: dict, kind: str = "result", suffix: str = ".json") -> Path:
    """Where a run keeps its outcome under one protocol: one file per protocol (its name and a
    digest of its settings), so evaluating a model with another protocol overwrites nothing.
    ``kind="partial"``: the attacks finished so far, while the evaluation runs (``.pt``)."""
    digest = hashlib.sha256(json.dumps(protocol, sort_keys=True).encode()).hexdigest()[:10]
    return run_dir / f"protocol_{kind}-{protocol['full_name']}-{digest}{suffix}"


def saved_result(run_dir: Path, cfg: dict, protocol: dict, checks: bool) -> dict | None:
    """The run's saved outcome under ``protocol`` when it is this job's: the same protocol (with
    the masking checks when they are asked for), and a finished model trained with ``cfg``'s
    settings.  Otherwise None (never another run's numbers: a dry run's, or a model trained
    with other settings)."""
    from odezoo.experiments.commands import train

    for path in (result_path(run_dir, protocol), run_dir / "protocol_result.json"):  # the second: older runs
        if path.exists():
            try:
                saved = load_sealed_json(path)
            except IntegrityError as error:
                fail(str(error))
            if saved.get("protocol") == protocol and (saved.get("checks_run") or not checks):
                return saved if train.finished_run_changes(run_dir, run_config(run_dir.name, cfg)) == {} else None
    return None


def run_model(experiment: str, arm: dict, seed: int, cfg: dict, folder: str, protocol: dict, checks: bool = True,
              quiet: bool = True, dry_run: bool = False, device: str = "cpu", crosscheck=None) -> dict:
    """One job: train (or reuse, or resume) one seed of one arm, evaluate it with the protocol
    and the masking checks, and keep the outcome in the run folder (`result_path`).  Idempotent:
    a finished run with a result under the same protocol (and the checks), trained with ``cfg``'s
    settings, returns it without touching the model, so a rerun of an experiment does only what
    is missing.  A finished run trained with other settings fails the job (nothing is overwritten)."""
    from odezoo.experiments.io import save_sealed_json
    from odezoo.experiments.protocol import Protocol, evaluate_protocol

    arm = Arm(**arm)
    protocol_obj = Protocol.from_dict(protocol)
    run = f"{arm.run_name}_seed{seed}"
    saved = saved_result(Path(folder) / "runs" / run, cfg, protocol_obj.to_dict(), checks)
    if saved is not None and (not crosscheck or saved.get("crosscheck")):
        return saved
    print(f"--- {experiment}: {arm.label}, seed {seed}", flush=True)
    device = torch.device(device)
    model, meta, loader, run_dir = trained_model(Path(folder), run, cfg, device, quiet)
    if saved is not None:  # evaluated before; only the cross-check is new
        with meta.evaluating():
            saved["crosscheck"] = crosscheck_rows(model, loader, protocol_obj, crosscheck, experiment, arm, seed, device)
        save_sealed_json(result_path(run_dir, protocol_obj.to_dict()), saved)
        return saved
    seconds = train_seconds(run_dir)
    started = time.time()
    # An interrupted evaluation (a killed job, the end of a session) resumes from the attacks it finished.
    partial = result_path(run_dir, protocol_obj.to_dict(), kind="partial", suffix=".pt")
    with meta.evaluating():
        result = evaluate_protocol(model, loader, protocol_obj, device=device, progress=None if quiet else print,
                                   store=partial, store_key=run_config(run, cfg))
    rows = result.rows(experiment=experiment, arm=arm.label, seed=seed, train_seconds=round(seconds, 3),
                       epochs=cfg["epochs"], test_images=result.fingerprint)
    check_rows = masking_rows(protocol_obj, model, meta, loader, experiment, arm, seed, device, dry_run) \
        if checks else []
    check_rows += protocol_check_rows(result, experiment, arm, seed)
    epoch_rows = []
    if arm.track:
        tracked = tracked_attack(arm.track)
        for record in read_jsonl(run_dir / "metrics.jsonl"):
            epoch_rows.append({"experiment": experiment, "arm": arm.label, "seed": seed, "epoch": record["epoch"],
                               "split": "validation", "attack": tracked, "eps": arm.track["eps"],
                               "accuracy": record["robust_val_acc"], "clean_accuracy": record["val_acc"]})
    print(per_model_table(rows, arm, seed, seconds), flush=True)
    # A resumed evaluation's cost includes the attacks an interrupted one finished and kept.
    cross_rows = []
    if crosscheck:
        with meta.evaluating():
            cross_rows = crosscheck_rows(model, loader, protocol_obj, crosscheck, experiment, arm, seed, device)
    out = {"protocol": protocol_obj.to_dict(), "checks_run": checks, "rows": rows, "checks": check_rows,
           "crosscheck": cross_rows,
           "epochs": epoch_rows, "train_seconds": seconds,
           "eval_seconds": time.time() - started + result.kept_seconds, "eval_seconds_kept": result.kept_seconds,
           "dataset": cfg["dataset"], "subset": cfg.get("subset")}
    save_sealed_json(result_path(run_dir, protocol_obj.to_dict()), out)
    partial.unlink(missing_ok=True)
    return out


def per_model_table(rows, arm: "Arm", seed: int, seconds: float) -> str:
    """One model's results as the results schema prints them (odezoo.experiments.results): model,
    solver, attack by protocol name and full setting, ε, accuracy with its image count and 95 %
    interval — the same columns as `odezoo train` and `odezoo evaluate` print."""
    from odezoo.experiments.results import format_table, from_protocol_rows

    table = from_protocol_rows(rows, model=f"{arm.label} seed {seed}", solver=arm.solver_text())
    return f"  {arm.label} seed {seed} (trained {seconds:.0f}s):\n" + format_table(table)


# --------------------------------------------------------------------------- an experiment: jobs, then files
def experiment_jobs(ctx: "Context", name: str, protocol) -> list:
    from odezoo.experiments.sweep import Job

    spec, jobs = experiment(name), []
    # Seed-major: a seed's arms are queued next to each other, so with parallel jobs they run at
    # the same time under the same load and the per-seed cost ratios compare like with like.
    arms = arms_of(name, ctx)
    labels = [a.label for a in arms]
    checked = spec.reference if spec.reference in labels else labels[0]  # the model whose attacks are cross-checked
    for seed in ctx.seeds_for(name):
        for arm in arms:
            kwargs = {"experiment": name, "arm": dataclasses.asdict(arm), "seed": seed,
                      "cfg": ctx.config(spec.data, arm, seed), "folder": str(ctx.out / name),
                      "protocol": protocol.to_dict(), "checks": ctx.checks, "quiet": ctx.quiet,
                      "dry_run": ctx.dry_run, "device": str(ctx.device)}
            if ctx.checks and arm.label == checked and seed == ctx.seeds_for(name)[0]:
                kwargs["crosscheck"] = list(ctx.crosscheck)  # one model per experiment: do the attack libraries agree?
            jobs.append(Job(f"{name}/{arm.run_name}_seed{seed}", __name__, "run_model", kwargs))
    return jobs


def finished_results(jobs) -> tuple[list[dict], list[str]]:
    """The results saved by the jobs (each its own: see `saved_result`), and the names of the others."""
    found, missing = [], []
    for job in jobs:
        k = job.kwargs
        run_dir = Path(k["folder"]) / "runs" / f"{Arm(**k['arm']).run_name}_seed{k['seed']}"
        saved = saved_result(run_dir, k["cfg"], k["protocol"], k["checks"])
        if saved is not None:
            found.append(saved)
        else:
            missing.append(job.name)
    return found, missing


def run_experiment(ctx: "Context", name: str) -> Path | None:
    """Run (or, with ``--collect``, only gather) every model of one experiment, then write the
    shipped files and the report from the models that have finished.  Returns the results
    folder, or None when some job failed (nothing shipped: rerun to finish what is missing)."""
    from odezoo.experiments.io import save_csv, save_json
    from odezoo.experiments.sweep import run_jobs

    spec, arms, seeds = experiment(name), arms_of(name, ctx), ctx.seeds_for(name)
    protocol = ctx.protocol(name)
    folder, results = ctx.out / name, ctx.results / name
    jobs = experiment_jobs(ctx, name, protocol)
    started = time.time()
    if not ctx.collect:
        check_dependencies(any(a.package == "torchattacks" for a in protocol.attacks), needs_crosscheck=ctx.checks)
        folder.mkdir(parents=True, exist_ok=True)
        print(f"=== {name} ({ctx.scale}{', dry run' if ctx.dry_run else ''}) -> {folder}; data -> {results}",
              flush=True)
        print(f"{len(arms)} arm(s) × seeds {seeds} = {len(jobs)} models ({ctx.launcher.describe()}); every model is "
              "evaluated with:\n" + protocol.describe(), flush=True)
        # Models an earlier run finished are reused without starting a job for them, so the
        # progress count and the time estimate cover only the models this command runs.
        unfinished = set(finished_results(jobs)[1])
        to_run = [job for job in jobs if job.name in unfinished]
        if len(to_run) < len(jobs):
            print(f"reusing {len(jobs) - len(to_run)} of {len(jobs)} models an earlier run finished under this "
                  f"protocol; running {len(to_run)}", flush=True)
        outcomes = run_jobs(to_run, ctx.launcher, progress=lambda line: print(line, flush=True))
        failed = [o for o in outcomes if not o.ok]
        if failed:
            print(f"{name}: {len(failed)} of {len(jobs)} models failed; nothing shipped. Rerun the same command to "
                  "finish only what is missing (finished models are reused), or add --collect to ship what has "
                  "finished:", flush=True)
            for o in failed:
                print(f"  {o.name}: {o.error}" + (f" (log: {o.log})" if o.log else ""), flush=True)
            return None
    found, missing = finished_results(jobs)
    if not found:
        print(f"{name}: no finished models under {folder} for protocol {protocol.full_name}; nothing shipped",
              flush=True)
        return None
    if missing:
        print(f"{name}: collecting {len(found)} of {len(jobs)} models; missing: {', '.join(missing)}", flush=True)
    rows = [r for f in found for r in f["rows"]]
    checks = [r for f in found for r in f["checks"]]
    epochs_rows = [r for f in found for r in f["epochs"]]
    results.mkdir(parents=True, exist_ok=True)
    save_csv(results / "per_seed.csv", rows)
    protocol.save(results / "protocol.json")
    cross = [r for f in found for r in f.get("crosscheck") or []]
    for file, data in (("checks.csv", checks), ("per_epoch.csv", epochs_rows), ("crosscheck.csv", cross)):
        if data:
            save_csv(results / file, data)
        else:
            (results / file).unlink(missing_ok=True)
    first = found[0]
    setup = {"experiment": name, "title": spec.title, "scale": ctx.scale, "dry_run": ctx.dry_run,
             "data": data_label(first["dataset"], first.get("subset")),
             "stand_in": first["dataset"] == "mnist-embedded-rgb32",
             "model": f"{ctx.base_config(spec.data)['model']} {ctx.base_config(spec.data).get('model_kwargs') or ''}"
                      .strip(),
             "epochs": rows[0]["epochs"], "batch_size": ctx.config(spec.data, arms[0], seeds[0])["batch_size"],
             "seeds": sorted({r["seed"] for r in rows}), "missing": missing,
             "arms": [{"label": a.label, "solver": a.solver_text(), "adversarial": a.adversarial.get("kind", "none")}
                      for a in arms],
             "reference": spec.reference, "x_axis": spec.x_axis,
             "wall_minutes": None if ctx.collect else round((time.time() - started) / 60, 1),
             "models": len(found), "models_run": None if ctx.collect else len(to_run),
             "compute_minutes": round(sum(f["train_seconds"] + f.get("eval_seconds", 0.0) for f in found) / 60, 1),
             # a --collect ran no model: how the earlier commands launched them is not known here
             "launcher": None if ctx.collect else ctx.launcher.describe(),
             "threads": None if ctx.collect else ctx.launcher.job_threads or torch.get_num_threads(),
             "job_order": "seed-major", "parallel_jobs": None if ctx.collect else ctx.launcher.jobs,
             "device": str(ctx.device),
             "command": f"odezoo reproduce {name} --scale {ctx.scale}"
                        + (f" --data-dir {ctx.data_dir}" if ctx.data_dir else "")
                        + (f" --protocol {ctx.protocol_name}" if ctx.protocol_name != "strong" else "")}
    save_json(results / "setup.json", setup)
    text = build_report(results, spec.paper, claims=spec.claims, differences=spec.differences)
    print(text, flush=True)
    return results


def main(argv=None) -> int:
    """``odezoo reproduce ARGV`` as a function; ``main(["report", ...])`` is ``odezoo report ...``."""
    from odezoo_cli import parse

    argv = list(argv or [])
    if argv[:1] == ["report"]:
        return report(parse("report", argv[1:]))
    return run(parse("reproduce", argv))


def report(args) -> int:
    """Carry out ``odezoo report``: every table, figure and page rebuilt from the shipped files."""
    results = Path(args.results) if args.results else Path("docs") / "results"
    page = Path(args.page) if args.page else (results / "results.md" if args.results else Path("docs") / "results.md")
    readme = Path(args.readme) if args.readme else (None if args.results or args.page else Path("README.md"))
    try:
        specs = {name: experiment(name) for name in EXPERIMENTS}
        write_report(results, page, EXPERIMENTS, {n: s.paper for n, s in specs.items()},
                     claims={n: s.claims for n, s in specs.items()},
                     differences={n: s.differences for n, s in specs.items()}, readme=readme)
        print(f"wrote {page}" + (f" and the claims table of {readme}" if readme else ""))
    except ReportError as error:
        fail(str(error))
    return 0


def run(args) -> int:
    """Carry out ``odezoo reproduce`` with parsed ``args``."""
    from odezoo.experiments.sweep import launcher_from_args

    try:
        launcher = launcher_from_args(args, folder=runs_folder(args) / "jobs")
    except ValueError as error:
        fail(str(error))
    ctx = Context(args, launcher)
    if ctx.scale == "paper" and not args.data_dir:
        fail("--scale paper needs --data-dir (full MNIST / CIFAR-10): run "
             "`odezoo train --config recipes/configs/mnist_paper.yaml --data-dir DIR --download` "
             "once on a machine with internet to fetch the data")
    if args.seeds and len(args.seeds.split(",")) < 2 and not args.dry_run:
        fail("give at least 2 seeds (3 or more recommended): results are mean ± standard error")
    names = EXPERIMENTS if args.experiment == "all" else (args.experiment,)
    try:
        with run_folder_lock(ctx.results, "odezoo reproduce"):
            if ctx.collect:  # reads the runs (a running reproduce may still hold their folder)
                shipped = [run_experiment(ctx, name) for name in names]
            else:
                with run_folder_lock(ctx.out, "odezoo reproduce"):
                    shipped = [run_experiment(ctx, name) for name in names]
    except RunFolderBusy as busy:
        fail(str(busy))
    return 0 if all(shipped) else 1

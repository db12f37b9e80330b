"""odezoo.experiments: the toolkit the recipes are built from (needs ``pip install 'odezoo[recipes]'``).

The solver core (``import odezoo``) never imports this package.  Its modules:

* [`models`][odezoo.experiments.models] — the paper's MNIST and CIFAR-10 neural ODE classifiers;
* [`data`][odezoo.experiments.data] — embedded MNIST digits, torchvision MNIST / CIFAR-10, loaders;
* [`training`][odezoo.experiments.training] — adversarial training batches, divergence checks, seeding;
* [`attacks`][odezoo.experiments.attacks] — FGSM, PGD (advertorch), EOT, AutoAttack components (torchattacks);
* [`evaluation`][odezoo.experiments.evaluation] — robust accuracy, the stronger per-example evaluation, tables;
* [`masking`][odezoo.experiments.masking] — automated gradient-masking checks;
* [`protocol`][odezoo.experiments.protocol] — named attacks and named, versioned evaluation protocols;
* [`statistics`][odezoo.experiments.statistics] — mean ± SE over seeds, seed-paired intervals, detectable effects;
* [`io`][odezoo.experiments.io] — atomic files: checkpoints, JSON, CSV, JSON-lines logs;
* [`plots`][odezoo.experiments.plots] — PNG figures (``matplotlib.figure.Figure``, no global backend);
* [`config`][odezoo.experiments.config] — recipe configs and solvers from configs;
* [`sweep`][odezoo.experiments.sweep] — many runs as jobs: in this process, local processes or Slurm (submitit);
* [`results`][odezoo.experiments.results] — the one results schema every printed or written table uses;
* [`loggers`][odezoo.experiments.loggers] — CSV and TensorBoard loggers beside ``metrics.jsonl``;
* `commands` — what ``odezoo train|evaluate|sweep|reproduce|report|demo`` do.
"""
from __future__ import annotations

import importlib.util

#: module name -> pip distribution of every package the ``recipes`` extra brings.
RECIPES_EXTRA = {"yaml": "PyYAML", "matplotlib": "matplotlib", "torchvision": "torchvision",
                 "advertorch": "advertorch", "mlxtend": "mlxtend", "tqdm": "tqdm",
                 "pydantic": "pydantic", "scipy": "scipy", "filelock": "filelock"}


def _missing(modules) -> list[str]:
    return [dist for module, dist in modules.items() if importlib.util.find_spec(module) is None]


_absent = _missing(RECIPES_EXTRA)
if _absent:
    raise ImportError(f"odezoo.experiments needs the 'recipes' extra (missing: {', '.join(_absent)}). "
                      f"Install it with: pip install 'odezoo[recipes]'")

from . import (attack_registry, attacks, config, data, evaluation, io, loggers, masking, models, plots, protocol,  # noqa: E402
               results, statistics, sweep, training)
from .attack_registry import ATTACK_KINDS, register_attack_kind  # noqa: E402
from .attacks import EOTModel, fgsm, pgd, pgd_step_size  # noqa: E402
from .config import load_config, meta_solver_from_config, parse_solver_grid  # noqa: E402
from .data import DatasetNotFoundError, get_datasets, make_loaders  # noqa: E402
from .evaluation import (RobustnessResult, StrongRobustnessResult, evaluate_robustness,  # noqa: E402
                         robustness_rows, strong_robustness)
from .io import CheckpointError, load_checkpoint, save_checkpoint  # noqa: E402
from .masking import gradient_masking_checks  # noqa: E402
from .models import Cifar10ODENet, MnistODENet, build_model  # noqa: E402
from .protocol import PROTOCOLS, Attack, Protocol, ProtocolResult, evaluate_protocol, get_protocol  # noqa: E402
from .training import TrainingDiverged, adversarial_batch  # noqa: E402

__all__ = [
    "attack_registry", "attacks", "config", "data", "evaluation", "io", "loggers", "masking", "models", "plots", "protocol", "results",
    "statistics", "sweep", "training",
    "RECIPES_EXTRA",
    "ATTACK_KINDS", "register_attack_kind",
    "EOTModel", "fgsm", "pgd", "pgd_step_size",
    "load_config", "meta_solver_from_config", "parse_solver_grid",
    "DatasetNotFoundError", "get_datasets", "make_loaders",
    "RobustnessResult", "StrongRobustnessResult", "evaluate_robustness", "robustness_rows", "strong_robustness",
    "CheckpointError", "load_checkpoint", "save_checkpoint",
    "gradient_masking_checks",
    "Cifar10ODENet", "MnistODENet", "build_model",
    "PROTOCOLS", "Attack", "Protocol", "ProtocolResult", "evaluate_protocol", "get_protocol",
    "TrainingDiverged", "adversarial_batch",
]

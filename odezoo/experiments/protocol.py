"""Named evaluation protocols: one protocol, applied to every model.

Attacks come from one registry ([`odezoo.experiments.attack_registry`][odezoo.experiments.attack_registry]):
an [`Attack`][odezoo.experiments.attack_registry.Attack]'s name (``fgsm``, ``pgd-7x2/255``,
``pgd-50x2.5eps/50-5r``, ``autoattack-standard``, ``square-5000q``, ``noise-uniform-8draws``) states
everything that changes its strength, and is the same in protocols, CSVs, the console and the docs.

A [`Protocol`][odezoo.experiments.protocol.Protocol] is a named, versioned list of attacks with the ε list
and the example counts: ``n_examples`` for the cheap attacks, ``n_autoattack`` for the query-heavy ones
(AutoAttack and Square), both the *first* test images in loader order, so every model of an experiment
sees the same images; ``n_checks`` for the gradient-masking checks.  It round-trips through JSON
(`Protocol.save` / `Protocol.load`, ``protocol.json``).  `PROTOCOLS` holds the named ones (``paper``,
``strong``, ``strong-fast``), each with a gradient-free attack (Square) so that gradient masking shows;
[`get_protocol`][odezoo.experiments.protocol.get_protocol] builds one for an experiment's ε list and counts.

[`evaluate_protocol`][odezoo.experiments.protocol.evaluate_protocol] runs a protocol on one model (through
[`odezoo.experiments.evaluation.strong_robustness`][odezoo.experiments.evaluation.strong_robustness], no attack
code of its own) and returns a [`ProtocolResult`][odezoo.experiments.protocol.ProtocolResult]: per-example
correctness per attack × ε, the per-example worst case, and rows ``{attack, eps, n_examples, accuracy}``
carrying the attacks' names.
"""
from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from .attack_registry import ATTACK_KINDS, Attack, eps_label
from .attacks import correct_predictions, positive_number
from .evaluation import strong_robustness
from .io import INTEGRITY_KEY, IntegrityError, atomic_write, state_digest

__all__ = ["ATTACK_KINDS", "Attack", "Protocol", "PROTOCOLS", "get_protocol", "ProtocolResult",
           "evaluate_protocol", "take_examples", "eps_label", "named_attacks", "resolve_attacks"]

# ============================================================================ protocols

@dataclass(frozen=True)
class Protocol:
    """A named, versioned evaluation: ``attacks`` at every ``eps`` (pixels) on the first
    ``n_examples`` test images (``n_autoattack`` for the query-heavy attacks — AutoAttack and
    Square —, ``n_checks`` for the gradient-masking checks; None = every test image), seeded by
    ``seed``."""
    name: str
    version: int
    attacks: tuple[Attack, ...]
    eps: tuple[float, ...] = ()
    n_examples: int | None = None
    n_autoattack: int | None = None
    n_checks: int | None = 256
    seed: int = 0
    note: str = ""

    def __post_init__(self):
        object.__setattr__(self, "attacks", tuple(a if isinstance(a, Attack) else Attack.from_dict(a)
                                                  for a in self.attacks))
        object.__setattr__(self, "eps", tuple(positive_number(e, "eps") for e in self.eps))
        names = [a.name for a in self.attacks]
        if len(set(names)) != len(names):
            raise ValueError(f"protocol {self.name!r} lists an attack twice: {names}")
        if not self.attacks:
            raise ValueError(f"protocol {self.name!r} has no attacks")
        for key in ("n_examples", "n_autoattack", "n_checks"):
            value = getattr(self, key)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
                raise ValueError(f"Protocol.{key} must be a positive integer or None (all), got {value!r}")

    @property
    def full_name(self) -> str:
        return f"{self.name}-v{self.version}"

    @property
    def attack_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attacks)

    def attack(self, name: str) -> Attack:
        for a in self.attacks:
            if a.name == name:
                return a
        raise KeyError(f"protocol {self.full_name} has no attack {name!r}; it has {self.attack_names}")

    def replace(self, **changes) -> "Protocol":
        return dataclasses.replace(self, **changes)

    def count_text(self, n_available: int | None = None) -> str:
        """'1,000 test images (AutoAttack: first 500)' with the counts clipped to what exists."""
        def clip(n):
            return n_available if n is None else (n if n_available is None else min(n, n_available))
        main, aa = clip(self.n_examples), clip(self.n_autoattack)
        main_text = "every test image" if main is None else f"the first {main:,} test images"
        heavy = [a for a in self.attacks if a.query_heavy]
        which = " and ".join(dict.fromkeys("AutoAttack" if a.kind == "autoattack" else a.kind.capitalize()
                                           for a in heavy))
        aa_text = "" if not heavy or aa == main else \
            f" ({which}: {'every test image' if aa is None else f'the first {min(aa, main or aa):,}'})"
        return main_text + aa_text

    def describe(self, n_available: int | None = None) -> str:
        """Markdown: the protocol's name, counts, ε and one line per attack."""
        eps = ", ".join(eps_label(e) for e in self.eps)
        lines = [f"**Protocol `{self.full_name}`** — ε ∈ {{{eps}}}, {self.count_text(n_available)}, seed "
                 f"{self.seed}; every model of the experiment is evaluated with it on the first images of its own test "
                 f"split — models sharing a split (on the embedded digits, the arms of one seed) on the same images "
                 f"(per-example worst case over all attacks as `worst`).", ""]
        lines += [f"* `{a.name}`: {a.describe()}" for a in self.attacks]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)

    # ------------------------------------------------------------------ JSON
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "full_name": self.full_name,
                "attacks": [a.to_dict() for a in self.attacks], "eps": list(self.eps),
                "n_examples": self.n_examples, "n_autoattack": self.n_autoattack, "n_checks": self.n_checks,
                "seed": self.seed, "note": self.note}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Protocol":
        known = {f.name for f in dataclasses.fields(cls)}
        protocol = cls(**{k: (tuple(v) if k in ("attacks", "eps") else v) for k, v in data.items() if k in known})
        if "full_name" in data and data["full_name"] != protocol.full_name:
            raise ValueError(f"protocol.json names {data['full_name']!r} but holds {protocol.full_name!r}")
        return protocol

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> "Protocol":
        return cls.from_dict(json.loads(text))

    def save(self, path: str | Path) -> Path:
        from .io import atomic_write
        return atomic_write(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Protocol":
        return cls.from_json(Path(path).read_text())


#: the paper's evaluation: FGSM and PGD with 7 steps of 2/255 (REFERENCE.md, Fig. 3a / Tables 1-2)
PAPER_ATTACKS = (Attack("fgsm"), Attack("pgd", steps=7, step_size=2 / 255))
#: the gradient-free attack every protocol carries, so that gradient masking shows (Square beating the
#: gradient attacks on an example is the sign); 1,000 queries where the protocol is meant to be cheap
SQUARE_CHEAP, SQUARE_FULL = Attack("square", square_queries=1000), Attack("square", square_queries=5000)
#: the stronger evaluation the paper's claims must survive
STRONG_ATTACKS = PAPER_ATTACKS + (Attack("pgd", steps=50, step_size="2.5*eps/steps", restarts=5),
                                  Attack("autoattack", version="standard"), SQUARE_FULL, Attack("noise", samples=8))
#: a CPU-cheap variant, labelled as such: PGD-20, the APGD-CE → APGD-DLR subset of AutoAttack, Square with 1,000 queries
STRONG_FAST_ATTACKS = PAPER_ATTACKS + (Attack("pgd", steps=20, step_size="2.5*eps/steps"),
                                       Attack("autoattack", version="fast"), SQUARE_CHEAP, Attack("noise", samples=8))

#: the named protocols at their current versions (version 1 of each lacked Square; its protocol.json files still
#: load, and their results are labelled with their full name)
PROTOCOLS: dict[str, Protocol] = {
    "paper": Protocol("paper", 2, PAPER_ATTACKS + (SQUARE_CHEAP,),
                      note="The paper's attacks, plus Square (gradient-free) as a masking check: not evidence of "
                           "robustness on their own (7 steps of 2/255 cannot cross an ε = 0.3 ball from a random "
                           "start)."),
    "strong": Protocol("strong", 2, STRONG_ATTACKS, n_autoattack=None,
                       note="The paper's attacks, PGD-50 with 5 restarts, the standard AutoAttack cascade, Square "
                            "(gradient-free) and a noise baseline, per example; `worst` is the number to read."),
    "strong-fast": Protocol("strong-fast", 2, STRONG_FAST_ATTACKS,
                            note="CPU-cheap variant (PGD-20, APGD-CE → APGD-DLR, Square with 1,000 queries): a weaker "
                                 "attack set than `strong`'s."),
}


def named_attacks() -> dict[str, Attack]:
    """Every attack of the named protocols, by name (plus ``autoattack`` for ``autoattack-standard``)."""
    attacks = {a.name: a for protocol in PROTOCOLS.values() for a in protocol.attacks}
    attacks["autoattack"] = attacks["autoattack-standard"]
    return attacks


def resolve_attacks(names: Sequence[str], pgd_steps: int = 7, pgd_step_size: float | str = 2 / 255,
                    pgd_restarts: int = 1) -> list[Attack]:
    """Attacks from their registry names (``fgsm``, ``pgd-50x2.5eps/50-5r``, ``autoattack-standard``,
    ``square-1000q``, ``noise-uniform-8draws``, any name `Attack.from_name` reads).  Two
    shorthands: a bare ``pgd`` is PGD with ``pgd_steps`` steps of ``pgd_step_size`` (pixels, or
    ``"auto"`` = 2.5·ε/steps) and ``pgd_restarts`` restarts; ``autoattack`` is the standard
    cascade.  An unknown name is a ``ValueError`` with a did-you-mean."""
    import difflib

    known = named_attacks()
    out = []
    for name in names:
        if name == "pgd":
            size = "2.5*eps/steps" if pgd_step_size in ("auto", None) else pgd_step_size
            attack = Attack("pgd", steps=pgd_steps, step_size=size, restarts=pgd_restarts)
        elif name in known:
            attack = known[name]
        else:
            try:
                attack = Attack.from_name(name)
            except (ValueError, TypeError):
                choices = ["fgsm", "pgd", "autoattack", *sorted(known)]
                close = difflib.get_close_matches(str(name), choices, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(f"unknown attack {name!r}{hint}; choose from {', '.join(dict.fromkeys(choices))} "
                                 f"or any name of the attack registry (odezoo.experiments.attack_registry)") from None
        if attack.name in {a.name for a in out}:
            raise ValueError(f"attack {attack.name!r} is listed twice")
        out.append(attack)
    return out


def get_protocol(name: str, eps: Sequence[float] | None = None, **changes) -> Protocol:
    """The named protocol (``paper``, ``strong``, ``strong-fast``) with an experiment's ε list
    and any counts changed (``n_examples=1000, n_autoattack=500``)."""
    if name not in PROTOCOLS:
        raise ValueError(f"unknown protocol {name!r}; choose from {sorted(PROTOCOLS)}")
    if eps is not None:
        changes["eps"] = tuple(eps)
    return PROTOCOLS[name].replace(**changes)


# ============================================================================ evaluation

def take_examples(loader: Iterable, n: int | None, device: str | torch.device = "cpu") -> list[tuple]:
    """The first ``n`` examples of ``loader`` (all when None) as a list of ``(x, y)`` batches on ``device``."""
    out, seen = [], 0
    for x, y in loader:
        if n is not None and seen >= n:
            break
        if n is not None and seen + len(y) > n:
            x, y = x[:n - seen], y[:n - seen]
        out.append((x.to(device), y.to(device)))
        seen += len(y)
    if not out:
        raise ValueError("the loader yielded no examples (empty dataset or n = 0)")
    return out


def _first(batches: list[tuple], n: int) -> list[tuple]:
    out, seen = [], 0
    for x, y in batches:
        if seen >= n:
            break
        take = min(len(y), n - seen)
        out.append((x[:take], y[:take]))
        seen += take
    return out


@dataclass
class ProtocolResult:
    """Per-example correctness of one model under a protocol.

    ``clean``: bool per example (the first ``n_examples``, loader order); ``correct[(attack,
    eps)]``: bool per example for the examples that attack ran on (a prefix: AutoAttack may
    run on fewer); ``stages[(attack, eps)]``: AutoAttack's survivors after each component;
    ``seconds[(attack, eps)]``: what each attack × ε took when it ran, and ``kept``: the attack ×
    ε results taken from an interrupted evaluation's store rather than computed by this call."""
    protocol: Protocol
    clean: torch.Tensor
    labels: torch.Tensor
    correct: dict[tuple[str, float], torch.Tensor]
    seconds: dict[tuple[str, float], float] = field(default_factory=dict)
    descriptions: dict[str, str] = field(default_factory=dict)
    stages: dict[tuple[str, float], dict[str, torch.Tensor]] = field(default_factory=dict)
    fingerprint: str = ""
    kept: tuple[tuple[str, float], ...] = ()

    @property
    def kept_seconds(self) -> float:
        """Attack time spent by the interrupted evaluation(s) whose results this one kept: add it
        to this call's wall time for the whole evaluation's cost."""
        return float(sum(self.seconds[key] for key in self.kept))

    @property
    def n_examples(self) -> int:
        return int(self.clean.numel())

    def n_of(self, attack: str, eps: float) -> int:
        return int(self.correct[(attack, eps)].numel())

    def accuracy(self, attack: str, eps: float = 0.0) -> float:
        if attack == "clean":
            return _mean(self.clean)
        if attack == "worst":
            return _mean(self.worst(eps))
        return _mean(self.correct[(attack, eps)])

    def worst(self, eps: float) -> torch.Tensor:
        """Per example (over the examples every attack ran on): correct on the clean input and
        under every attack at ``eps``."""
        masks = [ok for (a, e), ok in self.correct.items() if e == eps]
        n = min([self.n_examples] + [m.numel() for m in masks])
        out = self.clean[:n].clone()
        for ok in masks:
            out &= ok[:n]
        return out

    def rows(self, **extra) -> list[dict[str, Any]]:
        """``{**extra, protocol, attack, eps, n_examples, accuracy}``: clean (ε 0), every attack × ε
        in protocol order, and ``worst`` per ε."""
        base = {**extra, "protocol": self.protocol.full_name}
        rows = [{**base, "attack": "clean", "eps": 0.0, "n_examples": self.n_examples,
                 "accuracy": self.accuracy("clean")}]
        for eps in self.protocol.eps:
            for attack in self.protocol.attack_names:
                rows.append({**base, "attack": attack, "eps": eps, "n_examples": self.n_of(attack, eps),
                             "accuracy": self.accuracy(attack, eps)})
            worst = self.worst(eps)
            rows.append({**base, "attack": "worst", "eps": eps, "n_examples": int(worst.numel()),
                         "accuracy": _mean(worst)})
        return rows


def _shard(sharded: bool) -> tuple[int, int]:
    """(rank, world size) for a sharded evaluation; (0, 1) otherwise."""
    if not sharded:
        return 0, 1
    import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        raise ValueError("evaluate_protocol(sharded=True) needs torch.distributed to be initialized "
                         "(run under torchrun), or sharded=False")
    return dist.get_rank(), dist.get_world_size()


def _per_batch(result, name: str, lengths: list[int], ids: list[int]) -> dict:
    """This rank's per-example outcome of one attack, split back into its batches:
    ``(batch index, correct per example, {stage: correct per example})`` each."""
    batches = []
    if result is not None:
        oks = result.correct[name].split(lengths)
        stage_parts = {k: v.split(lengths) for k, v in result.stages.items()}
        for n, (i, ok) in enumerate(zip(ids, oks)):
            batches.append((i, ok, {k: v[n] for k, v in stage_parts.items()}))
    return {"batches": batches, "seconds": result.seconds.get(name, 0.0) if result is not None else 0.0,
            "stages": list(result.stages) if result is not None else []}


def _gather(mine: dict) -> dict:
    """Every rank's batches, in evaluation order, on every rank."""
    import torch.distributed as dist

    parts = [None] * dist.get_world_size()
    dist.all_gather_object(parts, mine)
    batches = sorted((b for part in parts for b in part["batches"]), key=lambda b: b[0])
    stages = next((part["stages"] for part in parts if part["stages"]), [])
    return {"batches": batches, "seconds": sum(part["seconds"] for part in parts), "stages": stages}


def _mean(mask: torch.Tensor) -> float:
    return int(mask.sum()) / mask.numel() if mask.numel() else float("nan")


def _fingerprint(batches) -> str:
    import hashlib
    digest = hashlib.sha1()
    for x, y in batches:
        digest.update(x.detach().cpu().float().numpy().tobytes())
        digest.update(y.detach().cpu().numpy().tobytes())
    return digest.hexdigest()[:12]


def _partial_identity(protocol: Protocol, fingerprint: str, model: nn.Module, key: Any) -> dict:
    """What a stored partial evaluation must match to be reused: the protocol, the test images,
    the model's weights and the caller's ``store_key``."""
    return {"protocol": protocol.to_dict(), "images": fingerprint, "model": state_digest(model.state_dict()),
            "key": json.dumps(key, sort_keys=True, default=str)}


def _load_partial(store: Path, identity: dict) -> dict:
    """The finished attack × ε results kept in ``store`` for ``identity``; {} when there are none,
    or when they belong to another protocol, other images or other weights (never reused then).
    The file carries the sha256 of its contents (written atomically, so never torn): a file that
    does not load or does not match it was damaged or edited, and is refused with
    [`IntegrityError`][odezoo.experiments.io.IntegrityError] naming it."""
    if not store.exists():
        return {}
    advice = (f"; delete {store} to evaluate from scratch (the attacks it kept are then run again)")
    try:
        saved = torch.load(store, map_location="cpu", weights_only=True)
    except Exception:
        raise IntegrityError(f"{store} (a partial evaluation) does not load: it was truncated or edited" + advice) \
            from None
    if not isinstance(saved, dict) or not isinstance(saved.get(INTEGRITY_KEY), dict):
        raise IntegrityError(f"{store} (a partial evaluation) has no integrity digest" + advice)
    if saved[INTEGRITY_KEY].get("digest") != state_digest(saved):
        raise IntegrityError(f"{store} (a partial evaluation) does not match the sha256 digest stored in it" + advice)
    if saved.get("identity") != identity:
        return {}
    return {(attack, float(eps)): entry for attack, eps, entry in saved.get("done", [])}


def _save_partial(store: Path, identity: dict, done: dict) -> None:
    entries = [(attack, eps, entry) for (attack, eps), entry in done.items()]
    payload = {"identity": identity, "done": entries}
    payload[INTEGRITY_KEY] = {"algorithm": "sha256", "digest": state_digest(payload)}
    atomic_write(store, lambda handle: torch.save(payload, handle))


def evaluate_protocol(model: nn.Module, loader: Iterable, protocol: Protocol, device: str | torch.device = "cpu",
                      before_batch: Callable[[], Any] | None = None,
                      progress: Callable[[str], Any] | None = None, sharded: bool = False,
                      store: str | Path | None = None, store_key: Any = None) -> ProtocolResult:
    """Run every attack of ``protocol`` at every ε on the first ``protocol.n_examples`` test
    images of ``loader`` (the query-heavy attacks, AutoAttack and Square, on the first
    ``protocol.n_autoattack`` of them).

    Each attack × ε is one `strong_robustness` call seeded by ``protocol.seed`` (batch
    ``i`` uses ``seed + i``), so the evaluation is reproducible and every attack sees the
    same images.  ``before_batch`` (e.g. a randomized MetaSolver's ``resample``) runs before
    every prediction and attack forward, as in `evaluate_robustness`; each attack's
    ``eot_samples`` applies.  ``progress(message)`` is called after each attack × ε.

    ``sharded=True`` under ``torch.distributed`` (every rank calls it with the same loader):
    rank ``r`` of ``w`` attacks the batches ``r, r + w, ...`` with the seeds those batches have
    in the whole evaluation, and the per-example results are gathered in order, so every rank
    returns the result one process would have computed (``seconds`` are summed over ranks).

    ``store`` (a file; one process, not sharded): every finished attack × ε is kept there, and an
    evaluation that was interrupted resumes from it, computing only the rest — with the same
    result as one uninterrupted run, since each attack × ε is seeded on its own.  Stored results
    are reused only for the same protocol, test images, model weights and ``store_key`` (anything
    else the result depends on, such as the solver the model is evaluated with, as JSON); delete
    the file when the result has been saved elsewhere."""
    if not protocol.eps:
        raise ValueError(f"protocol {protocol.full_name} has no eps: build it with get_protocol(name, eps=[...])")
    batches = take_examples(loader, protocol.n_examples, device)
    n_main = sum(len(y) for _, y in batches)
    n_aa = n_main if protocol.n_autoattack is None else min(protocol.n_autoattack, n_main)
    aa_batches = _first(batches, n_aa)
    clean = torch.cat([correct_predictions(model, x, y, before_batch).cpu() for x, y in batches])
    correct, seconds, descriptions, stages, kept = {}, {}, {}, {}, []
    rank, world = _shard(sharded)
    fingerprint = _fingerprint(batches)
    keep = store is not None and world == 1
    if keep:
        store = Path(store)
        identity = _partial_identity(protocol, fingerprint, model, store_key)
        done = _load_partial(store, identity)
    for eps in protocol.eps:
        for attack in protocol.attacks:
            key = (attack.name, eps)
            descriptions[attack.name] = attack.describe()
            if keep and key in done:
                correct[key], seconds[key] = done[key]["correct"], done[key]["seconds"]
                kept.append(key)
                if done[key]["stages"]:
                    stages[key] = done[key]["stages"]
                if progress is not None:
                    progress(f"{attack.name} ε={eps_label(eps)}: {100 * _mean(correct[key]):.1f}% of "
                             f"{correct[key].numel()} (kept from an interrupted evaluation)")
                continue
            subset = aa_batches if attack.query_heavy else batches
            ids = list(range(rank, len(subset), world))
            result = strong_robustness(model, [subset[i] for i in ids], eps, attacks=[attack], device=device,
                                       seed=protocol.seed, before_batch=before_batch, batch_ids=ids) \
                if ids else None
            mine = _per_batch(result, attack.name, [len(subset[i][1]) for i in ids], ids)
            merged = mine if world == 1 else _gather(mine)
            correct[key] = torch.cat([ok for _, ok, _ in merged["batches"]])
            seconds[key] = merged["seconds"]
            stage_names = merged["stages"]
            if stage_names:
                stages[key] = {name: torch.cat([st[name] for _, _, st in merged["batches"]]) for name in stage_names}
            if keep:
                done[key] = {"correct": correct[key], "seconds": seconds[key], "stages": stages.get(key, {})}
                _save_partial(store, identity, done)
            if progress is not None:
                progress(f"{attack.name} ε={eps_label(eps)}: {100 * _mean(correct[key]):.1f}% of "
                         f"{correct[key].numel()} ({seconds[key]:.0f}s)")
    labels = torch.cat([y.cpu() for _, y in batches])
    return ProtocolResult(protocol=protocol, clean=clean, labels=labels, correct=correct, seconds=seconds,
                          descriptions=descriptions, stages=stages, fingerprint=fingerprint, kept=tuple(kept))


"""One results schema for every table odezoo prints or writes.

Every accuracy is a row with the same columns (`SCHEMA`):

``model``
    what was trained (a run name, an arm and seed, ...);
``solver``
    the solver the model was evaluated with;
``attack``
    the attack's protocol name (``clean``, ``fgsm``, ``pgd-7x2/255``, ``autoattack-standard``,
    ``worst`` = the per-image worst case over the attacks of that ε);
``setting``
    the attack's full setting in words (``PGD, 7 steps of 2/255, 1 random start``);
``eps``
    ε in pixel units (0 for clean);
``n_images``
    how many test images the accuracy was measured on;
``accuracy``
    the fraction of those images classified correctly;
``ci_low``, ``ci_high``
    its 95% Wilson interval over the images (the uncertainty of the test sample only; the
    spread over training seeds is the report's business).

[`format_table`][odezoo.experiments.results.format_table] prints rows so that every accuracy carries its image count.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Mapping

__all__ = ["SCHEMA", "schema_row", "attack_setting", "wilson_interval", "format_table", "from_protocol_rows"]

SCHEMA = ("model", "solver", "attack", "setting", "eps", "n_images", "accuracy", "ci_low", "ci_high")


def wilson_interval(accuracy: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The 95% Wilson score interval of a proportion ``accuracy`` measured on ``n`` images."""
    if n <= 0 or not math.isfinite(accuracy):
        return float("nan"), float("nan")
    centre = (accuracy + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    # rounding may put a bound a hair past the accuracy itself at 0 or 1: the interval always holds it
    return max(0.0, min(accuracy, centre - half)), min(1.0, max(accuracy, centre + half))


def attack_setting(name: str) -> str:
    """The full setting of the attack called ``name`` in words (its registry name stays the key);
    ``clean`` and ``worst`` are the two rows that are not attacks."""
    if name == "clean":
        return "no attack"
    if name == "worst":
        return "per-image worst case over the attacks at this ε"
    from .protocol import resolve_attacks

    try:
        (attack,) = resolve_attacks([name])
    except (ValueError, TypeError):
        return name
    return attack.setting()


def schema_row(*, model: str, solver: str, attack: str, eps: float, n_images: int, accuracy: float,
               setting: str | None = None, **extra: Any) -> dict[str, Any]:
    """One row of `SCHEMA` (``extra`` columns follow it)."""
    if n_images is None or int(n_images) < 1:
        raise ValueError(f"a result needs the number of images it was measured on, got {n_images!r}")
    low, high = wilson_interval(float(accuracy), int(n_images))
    return {"model": model, "solver": solver, "attack": attack,
            "setting": setting if setting is not None else attack_setting(attack), "eps": float(eps),
            "n_images": int(n_images), "accuracy": float(accuracy), "ci_low": low, "ci_high": high, **extra}


def from_protocol_rows(rows: Iterable[Mapping[str, Any]], model: str, solver: str | None = None) -> list[dict]:
    """Schema rows from `ProtocolResult.rows` (``attack``, ``eps``, ``n_examples``, ``accuracy``)."""
    out = []
    for row in rows:
        extra = {k: v for k, v in row.items() if k not in ("attack", "eps", "n_examples", "accuracy", "solver",
                                                              "model")}
        out.append(schema_row(model=model, solver=solver if solver is not None else row.get("solver", ""),
                              attack=row["attack"], eps=row["eps"], n_images=row["n_examples"],
                              accuracy=row["accuracy"], **extra))
    return out


def _eps(value: float) -> str:
    from .protocol import eps_label

    return "-" if value == 0 else eps_label(value)


def format_table(rows: Iterable[Mapping[str, Any]]) -> str:
    """A Markdown table of schema rows: model, solver, attack (setting), ε, accuracy with its image
    count, and the 95% interval."""
    lines = ["| model | solver | attack (setting) | ε | accuracy (images) | 95% interval |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['solver']} | {r['attack']} ({r['setting']}) | {_eps(r['eps'])} | "
                     f"{r['accuracy']:.3f} ({r['n_images']:,} images) | "
                     f"[{r['ci_low']:.3f}, {r['ci_high']:.3f}] |")
    return "\n".join(lines)

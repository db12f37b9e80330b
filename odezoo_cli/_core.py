"""``odezoo families`` and ``odezoo tableau``: the solver core's commands (they import odezoo, so torch)."""
from __future__ import annotations

import sys

import odezoo
from odezoo.family import SINGULAR_TOL
from odezoo.parsing import parse_number


def _families_table() -> str:
    rows = [("name", "params", "defaults", "order", "stages", "provider")]
    for name, fam in sorted(odezoo.families().items()):
        defaults = ", ".join(f"{p}={v:.6g}" for p, v in fam.defaults.items())
        order = fam.order_label  # embedded pairs: "5(4)"
        rows.append((name, ", ".join(fam.params), defaults, order, str(fam.stages), fam.provider or "?"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _interval(family, param: str) -> str:
    low, high = family.support[param]
    return f"[{low:g}, {high:g}]"


def _families_help() -> str:
    """Every registered family with its parameters, defaults and sampling support."""
    rows = []
    for name, fam in sorted(odezoo.families().items()):
        params = "  ".join(f"--{p} {fam.defaults[p]:.6g} in {_interval(fam, p)}" for p in fam.params)
        rows.append((name, params or "(no parameters)"))
    width = max((len(name) for name, _ in rows), default=0)
    lines = ["families: --PARAM DEFAULT in [SUPPORT] (odezoo tableau FAMILY --help shows one in full):"]
    lines += [f"  {name.ljust(width)}  {params}" for name, params in rows]
    return "\n".join(lines)


def _family_help(family) -> str:
    """One family's parameters: names, defaults, support, singular constraints, members."""
    lines = [f"usage: odezoo tableau {family.name} " + " ".join(f"[--{p} VALUE]" for p in family.params),
             "", f"{family.name}: {family.description}".rstrip(": "),
             f"order {family.order}, {family.stages} stages, from {family.provider or '?'}"]
    if family.reference:
        lines.append(f"reference: {family.reference}")
    lines += ["", "parameters (a missing one takes its default; 1/3 works; any finite value off the",
              "singular sets below is accepted, samplers draw from the closed support interval):"]
    width = max((len(p) for p in family.params), default=0)
    for p in family.params:
        lines.append(f"  --{p.ljust(width)}  default {family.defaults[p]:.10g}, support {_interval(family, p)}")
    if family.constraints:
        lines += ["", f"constraints (the tableau is singular where one fails: |expression| < {SINGULAR_TOL:g} "
                      f"is refused,", f"and samplers keep |expression| >= {family.support_margin:g}):"]
        lines += [f"  {c.description}" for c in family.constraints]
    if family.members:
        lines += ["", "members:"]
        width = max(len(m) for m in family.members)
        for member, values in family.members.items():
            shown = " ".join(f"--{p} {v:.10g}" for p, v in values.items())
            lines.append(f"  {member.ljust(width)}  {shown}")
    return "\n".join(lines)


def _parse_params(family, extras: list[str]) -> dict[str, float]:
    params: dict[str, float] = {}
    i = 0
    while i < len(extras):
        item = extras[i]
        if not item.startswith("--"):
            raise ValueError(f"unexpected argument {item!r}; give parameters as --NAME VALUE")
        name, _, value = item[2:].partition("=")
        if not value:
            if i + 1 >= len(extras):
                raise ValueError(f"--{name} needs a value")
            value = extras[i + 1]
            i += 1
        params[name] = parse_number(value)
        i += 1
    family.resolve(params)  # unknown names -> ValueError listing the family's parameters
    return params


def run(args, extras: list[str], parser) -> int:
    """Carry out ``families`` or ``tableau`` (``parser``: the whole odezoo parser, for usage errors)."""
    tab = parser._tableau
    try:
        if args.command == "families":
            if extras:
                parser.error(f"unrecognized arguments: {' '.join(extras)}")
            print(_families_help() if args.params else _families_table())
            for problem in odezoo.plugin_problems():
                print(f"warning: {problem}", file=sys.stderr)
        elif args.command == "tableau" and args.help:
            if args.family is None:
                print(tab.format_help().rstrip())
            else:
                print(_family_help(odezoo.get_family(args.family)))
        else:
            family = odezoo.get_family(args.family)
            params = family.resolve(_parse_params(family, extras))
            tableau = family.tableau(**params)
            shown = ", ".join(f"{p}={v:.10g}" for p, v in params.items())
            print(f"{family.name} ({shown}): {family.description}" if shown else f"{family.name}: {family.description}")
            print(tableau)
            print(f"order {tableau.order()} (declared {family.order}), {tableau.stages} stages")
            if tableau.embedded:  # an embedded pair: the second row too
                mid = "" if tableau.b_mid is None else f"; dense output b_mid of order {tableau.mid_order()} at 1/2"
                print(f"embedded row b^ order {tableau.embedded_order()} (declared {family.embedded_order}), "
                      f"error estimate b - b^ of order {tableau.error_order()}{mid}")
    except ValueError as error:
        print(f"odezoo: error: {error}", file=sys.stderr)
        return 2
    return 0

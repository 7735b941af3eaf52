"""Tables for a terminal or a log: short headers with a legend, never truncated; values wrap instead of being cut;
a table too wide for the terminal even so is printed one record per block. `--format json/csv` carry full values."""

from __future__ import annotations

import json
import math
import shutil
import textwrap
from typing import Any

import click
from pydash import get

# field (as queried, or as a set member names it) -> (header, what it is, with its unit)
LABELS: dict[str, tuple[str, str]] = {
    "formula_pretty": ("formula", ""),
    "registry_id": ("id", ""),
    "origin_kind": ("origin", ""),
    "origin.kind": ("origin", ""),
    "origin.source": ("source", ""),
    "origin.source_id": ("source id", ""),
    "formation_energy_per_atom": ("E_form", "formation energy, eV/atom"),
    "e_above_hull": ("E_hull", "energy above the convex hull, eV/atom"),
    "band_gap": ("gap", "predicted band gap, eV"),
    "free_sphere": ("Df", "free-sphere diameter of the channel, Å"),
    "has_1d_channel": ("1D", "has a 1-D channel"),
    "average_voltage": ("V", "average insertion voltage vs the metal, V"),
    "capacity_grav": ("mAh/g", "gravimetric capacity, mAh/g"),
}
GAP = 2  # spaces between columns
WHOLE = 20  # values up to this long (a registry id) are kept on one line when the table can afford it


def label(field: str) -> tuple[str, str]:
    """The header for a (dotted) field and its legend entry; `values.e_above_hull` is shown as E_hull."""
    key = field.removeprefix("values.")
    return LABELS.get(field) or LABELS.get(key) or (key, "")


def cell(value: Any) -> str:
    """A value as a table shows it: 4 significant figures, lists and documents as compact JSON."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    if isinstance(value, list | dict):
        return json.dumps(value, default=str, separators=(",", ":"), ensure_ascii=False)
    return "" if value is None else str(value)


def full(value: Any) -> str:
    """A value as CSV carries it: floats at full precision (repr round-trips), lists and documents as JSON."""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, list | dict):
        return json.dumps(value, default=str, ensure_ascii=False)
    return "" if value is None else str(value)


def terminal_width() -> int:
    """$COLUMNS, else the terminal's width, else 80 (a log or a pipe)."""
    return shutil.get_terminal_size((80, 24)).columns


def _widths(headers: list[str], cells: list[list[str]], width: int) -> tuple[list[int], int] | None:
    """Column widths that fit `width`, and the gap between columns: short values (an id) kept whole if the table
    can afford it, at two spaces between columns or else one; failing that every header whole and the widest
    columns narrowed (their values wrap). None when even the headers do not fit side by side."""
    natural = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    whole = [max(len(h), min(n, WHOLE)) for h, n in zip(headers, natural, strict=True)]
    bare = [len(h) for h in headers]
    for floor, gap in ((whole, GAP), (whole, 1), (bare, GAP), (bare, 1)):
        budget = width - gap * (len(headers) - 1)
        if sum(floor) <= budget:
            break
    else:
        return None
    widths = list(natural)
    while sum(widths) > budget:  # narrow the widest column that can give, a character at a time
        i = max((j for j in range(len(widths)) if widths[j] > floor[j]), key=lambda j: widths[j])
        widths[i] -= 1
    return widths, gap


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=True, break_on_hyphens=False) or [""]


def format_table(rows: list[dict[str, Any]], fields: list[str], width: int | None = None) -> list[str]:
    """The lines of a table of `fields` (dotted paths) over `rows`, at most `width` columns wide."""
    width = width or terminal_width()
    labels = [label(f) for f in fields]
    headers = [h for h, _ in labels]
    cells = [[cell(get(r, f)) for f in fields] for r in rows]
    fitted = _widths(headers, cells, width)
    lines: list[str] = []
    if fitted is None:  # one block per record, "header  value"
        pad = max(len(h) for h in headers)
        for n, row in enumerate(cells, 1):
            lines.append(f"-- {n} --")
            for h, value in zip(headers, row, strict=True):
                wrapped = _wrap(value, max(20, width - pad - GAP))
                lines.append(f"{h:<{pad}}{' ' * GAP}{wrapped[0]}")
                lines += [" " * (pad + GAP) + more for more in wrapped[1:]]
    else:
        widths, gap = fitted
        sep = " " * gap
        lines.append(sep.join(f"{h:<{w}}" for h, w in zip(headers, widths, strict=True)).rstrip())
        lines.append(sep.join("-" * w for w in widths))
        for row in cells:
            parts = [_wrap(v, w) for v, w in zip(row, widths, strict=True)]
            for k in range(max(len(p) for p in parts)):
                lines.append(sep.join(f"{p[k] if k < len(p) else '':<{w}}"
                                      for p, w in zip(parts, widths, strict=True)).rstrip())
    legend = [f"{h}: {meaning}" for h, meaning in dict(labels).items() if meaning]
    if legend:
        lines += _wrap("; ".join(legend), width)
    return lines


def print_table(rows: list[dict[str, Any]], fields: list[str]) -> None:
    """Print `rows` as a table that fits the terminal (or $COLUMNS), with a legend for abbreviated headers."""
    for line in format_table(rows, fields):
        click.echo(line)

"""How far each transition metal of an oxide framework can be reduced when a working ion goes in.

The floors come from `registry/data/redox/floors.csv` (one row per metal, with the oxides the floor rests on and
the source; see the README there): the lowest oxidation state in oxides that an insertion reaches, not the lowest
that exists (TiO and VO are rock-salt monoxides no insertion makes). They bound the electrons a framework takes,
hence the ions inserted and the capacity: W6+ gives two electrons (to W4+), Sc3+ and Zr4+ none.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from functools import cache

from registry import DATA

FLOORS = DATA / "redox" / "floors.csv"


@dataclass(frozen=True)
class RedoxFloor:
    element: str
    floor: int
    reduction: str
    oxides: str
    source: str
    note: str


@cache
def redox_floors() -> dict[str, RedoxFloor]:
    """Element symbol -> its floor, as tabulated."""
    with FLOORS.open(newline="", encoding="utf-8") as fh:
        return {row["element"]: RedoxFloor(row["element"], int(row["floor"]), row["reduction"], row["oxides"],
                                           row["source"], row["note"]) for row in csv.DictReader(fh)}


def reduction_floor(symbol: str) -> int | None:
    """The lowest oxidation state `symbol` is reduced to in an oxide; None for a metal the table does not cover
    (it then takes no electron)."""
    entry = redox_floors().get(symbol)
    return entry.floor if entry else None


def electrons(symbol: str, oxidation_state: float) -> float:
    """Electrons one site of `symbol` at `oxidation_state` can take before reaching its floor (0 at or below it)."""
    floor = reduction_floor(symbol)
    return 0.0 if floor is None else max(0.0, oxidation_state - floor)

"""A small library of tunnel (and dense) oxide frameworks built from published crystallography.

Each framework is one entry of `registry/data/frameworks/frameworks.json`: space group, cell, Wyckoff sites, the
paper the numbers come from, how sure the coordinates are (`coordinates.status`: "published", "recalled",
"recalled-corrected" or "model"; read `coordinates.note` before relying on one), and what a correct build must
show (declared density from Z and the cell, metal-oxygen bond range per cation). `Framework.structure()` builds
the pymatgen Structure from that spec; the CIF next to the JSON (`framework_path(id)`) was written from the same
build and carries the reference.

    from registry.science.frameworks import load_frameworks, framework_path
    for fw in load_frameworks():
        s = fw.structure()

The numbers are facts from the cited papers; the files are the registry's (MIT). See the README in that folder.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from pymatgen.core import Lattice, Structure

from registry import DATA

DATA_DIR = DATA / "frameworks"
SPEC_FILE = DATA_DIR / "frameworks.json"


@dataclass(frozen=True)
class Site:
    label: str
    element: str
    wyckoff: str
    x: float
    y: float
    z: float
    occupancy: float = 1.0


@dataclass(frozen=True)
class Reference:
    authors: tuple[str, ...]
    journal: str | None
    year: int | None
    volume: int | None = None
    pages: str | None = None
    title: str | None = None
    doi: str | None = None
    database_id: str | None = None

    def citation(self) -> str:
        """'Authors (year) Journal volume, pages' and the DOI or database id when known."""
        names = ", ".join(self.authors) if len(self.authors) <= 3 else f"{self.authors[0]} et al."
        text = f"{names} ({self.year}) {self.journal}"
        if self.volume is not None:
            text += f" {self.volume}"
        if self.pages:
            text += f", {self.pages}"
        if self.doi:
            text += f", doi:{self.doi}"
        elif self.database_id:
            text += f" [{self.database_id}]"
        return text


@dataclass(frozen=True)
class BondRange:
    """The `cn` nearest oxygens of every site of this element lie between `min` and `max` Å."""

    cn: int
    min: float
    max: float


@dataclass(frozen=True)
class Framework:
    id: str
    name: str
    tunnel: str
    role: str  # "host" or "dense non-host"
    formula: str
    z: int  # formula units per cell
    space_group_symbol: str
    space_group_number: int
    setting: str
    lattice: tuple[float, float, float, float, float, float]  # a, b, c (Å), alpha, beta, gamma (deg)
    channel_axis: str | None
    sites: tuple[Site, ...]
    reference: Reference
    coordinates_status: str
    coordinates_note: str
    approximation: str
    density: float  # g/cm3 from Z, the formula and the cell: what a correct build must give
    bonds: dict[str, BondRange] = field(hash=False, compare=False)
    other_references: tuple[Reference, ...] = ()
    cif: str = ""

    def structure(self) -> Structure:
        """The ordered structure (fractional occupancies, if any, kept as given) from the space group and sites."""
        lattice = Lattice.from_parameters(*self.lattice)
        species = [{s.element: s.occupancy} for s in self.sites]
        coords = [(s.x, s.y, s.z) for s in self.sites]
        return Structure.from_spacegroup(self.space_group_symbol, lattice, species, coords,
                                         labels=[s.label for s in self.sites])

    @property
    def path(self) -> Path:
        return framework_path(self.id)


def _reference(data: dict) -> Reference:
    return Reference(authors=tuple(data["authors"]), journal=data.get("journal"), year=data.get("year"),
                     volume=data.get("volume"), pages=data.get("pages"), title=data.get("title"),
                     doi=data.get("doi"), database_id=data.get("database_id"))


def _framework(entry: dict) -> Framework:
    lat = entry["lattice"]
    return Framework(
        id=entry["id"], name=entry["name"], tunnel=entry["tunnel"], role=entry["role"], formula=entry["formula"],
        z=entry["Z"], space_group_symbol=entry["space_group"]["symbol"],
        space_group_number=entry["space_group"]["number"], setting=entry["space_group"]["setting"],
        lattice=(lat["a"], lat["b"], lat["c"], lat["alpha"], lat["beta"], lat["gamma"]),
        channel_axis=entry.get("channel_axis"),
        sites=tuple(Site(label=s["label"], element=s["element"], wyckoff=s["wyckoff"], x=s["x"], y=s["y"], z=s["z"],
                         occupancy=s.get("occupancy", 1.0)) for s in entry["sites"]),
        reference=_reference(entry["reference"]),
        coordinates_status=entry["coordinates"]["status"], coordinates_note=entry["coordinates"]["note"],
        approximation=entry["approximation"], density=entry["expected"]["density_g_cm3"],
        bonds={el: BondRange(**rng) for el, rng in entry["expected"]["bonds"].items()},
        other_references=tuple(_reference(r) for r in entry.get("other_references", [])),
        cif=entry["cif"],
    )


@cache
def _load(path: Path) -> tuple[Framework, ...]:
    return tuple(_framework(entry) for entry in json.loads(path.read_text())["frameworks"])


def load_frameworks(path: Path = SPEC_FILE) -> list[Framework]:
    """Every framework of the library, in file order."""
    return list(_load(Path(path)))


def get_framework(framework_id: str) -> Framework:
    for fw in _load(SPEC_FILE):
        if fw.id == framework_id:
            return fw
    raise KeyError(f"no framework {framework_id!r}; known: {', '.join(f.id for f in _load(SPEC_FILE))} "
                   f"(groups: {', '.join(GROUPS)})")


# Names that select several frameworks at once (`select_frameworks`).
GROUPS = {"tunnel": "every framework whose role is 'host' (the open-tunnel hosts)", "all": "every framework"}


def select_frameworks(names: Iterable[str]) -> list[Framework]:
    """Frameworks by id, or by a group name of GROUPS ('tunnel': the tunnel hosts), in file order, each once.
    An unknown name raises KeyError listing the known ones."""
    chosen: set[str] = set()
    for name in names:
        if name == "all":
            chosen |= {fw.id for fw in _load(SPEC_FILE)}
        elif name == "tunnel":
            chosen |= {fw.id for fw in _load(SPEC_FILE) if fw.role == "host"}
        else:
            chosen.add(get_framework(name).id)
    return [fw for fw in _load(SPEC_FILE) if fw.id in chosen]


def framework_path(framework_id: str) -> Path:
    """The CIF written from that framework's spec."""
    return DATA_DIR / get_framework(framework_id).cif

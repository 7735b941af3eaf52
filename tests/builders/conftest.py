"""A handful of small structures, mined and generated, in a fresh registry: enough to exercise every stage."""

from __future__ import annotations

import csv

import pytest
from pymatgen.core import Lattice, Structure

from builders.chain import BuildOptions
from registry.io.ingest import Ingestor
from registry.io.readers import parse_cif
from registry.io.records import Record
from schemas.structure import Origin

MP20_ROWS = ("mp-510408", "mp-1080243")  # MnO2 pyrolusite, MgMnO2: known compounds with MP formation energies


def mp20_records(shared_data) -> list[Record]:
    out = []
    with open(shared_data / "mp20_sample" / "train.csv", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["material_id"] in MP20_ROWS:
                origin = Origin(kind="mined", source="csv", source_id=row["material_id"])
                out.append(Record(origin, parse_cif(row["cif"])[0],
                                  {"formation_energy_per_atom": float(row["formation_energy_per_atom"])}))
    return out


def generated(source_id: str, structure: Structure, run: str = "run-1") -> Record:
    return Record(Origin(kind="generated", source="test", source_id=source_id, run_id=run, generator="test"),
                  structure)


def rocksalt(a: float, species: tuple[str, str]) -> Structure:
    return Structure.from_spacegroup("Fm-3m", Lattice.cubic(a), list(species), [[0, 0, 0], [0.5, 0.5, 0.5]]
                                     ).get_primitive_structure()


@pytest.fixture
def small_set(shared_data) -> list[Record]:
    mined = mp20_records(shared_data)
    pyrolusite = mined[[r.origin.source_id for r in mined].index("mp-510408")].structure
    shaken = pyrolusite.copy()
    shaken.perturb(0.02)
    return [
        *mined,
        generated("dup-of-pyrolusite", shaken),  # matches a known structure: not novel
        generated("mno", rocksalt(4.45, ("Mn", "O"))),  # MnO rock salt: valid and new to this registry
        generated("nacl2", Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"],
                                     [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]])),  # not charge-balanced
    ]


@pytest.fixture
def loaded(registry, small_set):
    Ingestor(registry).write(small_set)
    registry.ensure_indexes()
    return registry


@pytest.fixture
def fast() -> BuildOptions:
    """Few relaxation steps: these tests check bookkeeping, not physics. Everything valid is relaxed, not only
    what the preset wants, whatever its channel (none of these dense structures would pass the free-sphere screen)."""
    return BuildOptions(steps=5, fmax=0.2, scope={}, channel_margin=float("inf"))

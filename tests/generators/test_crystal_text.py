"""The crystal-text codec: round trips within the precision of the text, and a clear reason for everything else."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Element, Lattice, Structure

from generators.crystal_text import (
    GENERATION_INSTRUCTION,
    MASK,
    CrystalTextError,
    generation_prompt,
    infill_prompt,
    structure_to_text,
    text_to_structure,
)
from tests.paths import SAMPLE

MP20_TRAIN = SAMPLE / "mp20" / "train.csv"
ELEMENTS = [Element.from_Z(z).symbol for z in range(1, 84)]  # H..Bi
MIN_SEPARATION = 1.2  # Å between generated atoms: well above the 0.5 Å validity cutoff after rounding

# The text keeps lengths to 0.05 Å (<= 1.7 % of a 3 Å axis), angles to 0.5 degrees and fractional coordinates to
# 0.005 (<= 0.045 Å along a 9 Å axis). ltol = 0.05 is three times the worst length error; angle_tol = 2 degrees
# leaves room for the Niggli reduction the matcher does, which mixes the rounded angles; stol = 0.1 (in units of
# (V/n)^(1/3), >= 1.5 Å here) allows about 0.15 Å of site error, three times the coordinate rounding along a cell
# diagonal (the largest normalised site error measured on 1,500 random structures was 0.027). All are well inside
# pymatgen's defaults (0.2, 0.3, 5), so a codec that lost a digit or mixed up sites would fail. No primitive-cell
# reduction: the text keeps the cell, and rounding can push a near-symmetric draw (two H 0.586 a apart in a 3 Å
# cell) across the primitive finder's 0.25 Å tolerance, halving one side's cell but not the other's.
MATCHER = StructureMatcher(ltol=0.05, stol=0.1, angle_tol=2.0, primitive_cell=False)


@st.composite
def small_structures(draw: st.DrawFn) -> Structure:
    """1-8 sites of H..Bi in a cell with 3-9 Å axes and 70-110 degree angles, no two atoms closer than 1.2 Å."""
    abc = [draw(st.floats(3.0, 9.0)) for _ in range(3)]
    angles = [draw(st.floats(70.0, 110.0)) for _ in range(3)]
    lattice = Lattice.from_parameters(*abc, *angles)
    n = draw(st.integers(1, 8))
    species = draw(st.lists(st.sampled_from(ELEMENTS), min_size=n, max_size=n))
    coords = draw(st.lists(st.tuples(*[st.floats(0.0, 1.0, exclude_max=True)] * 3), min_size=n, max_size=n))
    kept: list[int] = []
    for i, xyz in enumerate(coords):  # drop atoms too close to earlier ones rather than reject the whole draw
        if not kept or lattice.get_all_distances([xyz], [coords[k] for k in kept]).min() >= MIN_SEPARATION:
            kept.append(i)
    return Structure(lattice, [species[i] for i in kept], [coords[i] for i in kept])


def _circular_gap(a: np.ndarray, b: np.ndarray) -> float:
    d = np.abs(a - b) % 1.0
    return float(np.minimum(d, 1.0 - d).max())


@settings(max_examples=150, deadline=None)
@given(small_structures())
def test_untranslated_text_keeps_every_number_to_its_printed_precision(structure: Structure) -> None:
    parsed = text_to_structure(structure_to_text(structure, translate=False))
    assert [s.specie.symbol for s in parsed] == [s.specie.symbol for s in structure]
    assert np.abs(np.array(parsed.lattice.abc) - structure.lattice.abc).max() <= 0.05 + 1e-9
    assert np.abs(np.array(parsed.lattice.angles) - structure.lattice.angles).max() <= 0.5 + 1e-9
    assert _circular_gap(parsed.frac_coords, structure.frac_coords) <= 0.005 + 1e-9


@settings(max_examples=150, deadline=None)
@given(small_structures(), st.integers(0, 2**32 - 1))
def test_translated_text_describes_the_same_crystal(structure: Structure, seed: int) -> None:
    text = structure_to_text(structure, rng=np.random.default_rng(seed))
    assert MATCHER.fit(structure, text_to_structure(text))


@pytest.mark.filterwarnings("ignore:Issues encountered while parsing CIF")
def test_mp20_structures_round_trip() -> None:
    rows = pd.read_csv(MP20_TRAIN).sample(40, random_state=0)
    rng = np.random.default_rng(0)
    for cif in rows["cif"]:
        structure = Structure.from_str(cif, fmt="cif")
        assert MATCHER.fit(structure, text_to_structure(structure_to_text(structure, rng=rng))), cif[:60]


def test_translation_changes_the_text_but_not_the_crystal() -> None:
    rutile = Structure.from_spacegroup("P4_2/mnm", Lattice.tetragonal(4.59, 2.96), ["Ti", "O"],
                                       [[0, 0, 0], [0.305, 0.305, 0]])
    texts = {structure_to_text(rutile, rng=np.random.default_rng(seed)) for seed in range(5)}
    assert len(texts) == 5
    assert all(text.splitlines()[:2] == ["4.6 4.6 3.0", "90 90 90"] for text in texts)
    assert all(MATCHER.fit(rutile, text_to_structure(text)) for text in texts)


def test_coordinates_are_written_inside_the_cell() -> None:
    structure = Structure(Lattice.cubic(4.0), ["Na", "Cl"], [[0.998, 0.0, 0.0], [0.5, 0.5, 0.5]])
    lines = structure_to_text(structure, translate=False).splitlines()
    assert lines[3] == "0.00 0.00 0.00"


GOOD = "4.0 4.0 4.0\n90 90 90\nNa\n0.00 0.00 0.00\nCl\n0.50 0.50 0.50"


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "at least one site"),
        ("4.0 4.0 4.0\n90 90 90\nNa", "at least one site"),
        (GOOD + "\nNa", "site 3 has an element line but no coordinate line"),
        (GOOD.replace("4.0 4.0 4.0", "4.0 4.0"), "lattice lengths (line 1): expected 3 numbers"),
        (GOOD.replace("4.0 4.0 4.0", "4.0 four 4.0"), "lattice lengths (line 1): not numeric"),
        (GOOD.replace("4.0 4.0 4.0", "4.0 nan 4.0"), "not numeric"),
        (GOOD.replace("4.0 4.0 4.0", "4.0 1e999 4.0"), "out of range"),
        (GOOD.replace("4.0 4.0 4.0", "4.0 0.0 4.0"), "lengths must be positive"),
        (GOOD.replace("0.50 0.50 0.50", "0.50 0.50"), "coordinates of site 2: expected 3 numbers"),
        (GOOD.replace("Cl", "Xx"), "site 2: unknown element 'Xx'"),
        (GOOD.replace("Cl", "D"), "site 2: unknown element 'D'"),
        (GOOD.replace("90 90 90", "90 90 180"), "strictly between 0 and 180"),
        (GOOD.replace("90 90 90", "10 10 170"), "do not make a cell"),
        (GOOD.replace("0.50 0.50 0.50", "0.05 0.00 0.00"), "atoms closer than 0.5"),
        (GOOD.replace("4.0 4.0 4.0", "0.3 4.0 4.0"), "shorter than 0.5"),
    ],
)
def test_malformed_or_unphysical_text_is_refused_with_its_reason(text: str, reason: str) -> None:
    with pytest.raises(CrystalTextError, match=reason.replace("(", r"\(").replace(")", r"\)")):
        text_to_structure(text)


def test_disordered_structures_cannot_be_written() -> None:
    alloy = Structure(Lattice.cubic(3.6), [{"Cu": 0.5, "Au": 0.5}], [[0, 0, 0]])
    with pytest.raises(CrystalTextError, match="disordered"):
        structure_to_text(alloy)


_TOKENS = st.sampled_from(["4.0", "90", "-1", "0", "1e400", "0.50", "nan", ".", "Mn", "O", "Xx", MASK, "", "  "])
_JUNK = st.one_of(
    st.text(max_size=300),
    st.lists(st.lists(_TOKENS, max_size=4).map(" ".join), max_size=12).map("\n".join),
    st.lists(st.one_of(st.lists(st.floats(allow_nan=True, allow_infinity=True), min_size=3, max_size=3)
                       .map(lambda xs: " ".join(map(str, xs))), st.sampled_from(ELEMENTS)), max_size=10)
    .map(lambda lines: "\n".join(["4.0 4.0 4.0", "90 90 90", *lines])),
    st.builds(  # a valid text with one kind of token swapped for something out of range
        lambda t: structure_to_text(Structure(
            Lattice.tetragonal(4.4, 2.9), ["Mn", "Mn", "O", "O", "O", "O"],
            [[0, 0, 0], [.5, .5, .5], [.3, .3, 0], [.7, .7, 0], [.8, .2, .5], [.2, .8, .5]]), translate=False
        ).replace(*t),
        st.tuples(st.sampled_from(["4.4", "90", "Mn", "0.30", "\n"]),
                  st.sampled_from(["1e308", "0", "-4.4", "179.9999", "0.001", "Xx", "nan", "", "\n\n", "1e-9"]))),
)


@settings(max_examples=400, deadline=None)
@given(_JUNK)
def test_junk_text_raises_only_crystal_text_errors(text: str) -> None:
    try:
        structure = text_to_structure(text)
    except CrystalTextError as exc:
        assert str(exc)
    else:
        assert len(structure) >= 1 and math.isfinite(structure.volume)


def test_generation_prompt_follows_crystal_text_llm() -> None:
    assert generation_prompt() == "Below is a description of a bulk material. " + GENERATION_INSTRUCTION
    prompt = generation_prompt("Mn4O8", {"formation_energy_per_atom": -1.23456, "band_gap": 0.5})
    assert prompt.startswith("Below is a description of a bulk material. The chemical formula is MnO2. "
                             "The formation energy per atom is -1.2346. The band gap is 0.5. ")
    assert prompt.endswith("for each atom within the lattice:\n")
    with pytest.raises(ValueError, match="unknown property 'density'"):
        generation_prompt(properties={"density": 3.0})


def test_infill_prompt_masks_whole_element_lines_only() -> None:
    text = "5.0 5.0 5.0\n90 90 90\nCo\n0.00 0.00 0.00\nC\n0.50 0.50 0.50"
    prompt = infill_prompt(text, "C")
    assert "\nCo\n" in prompt and f"\n{MASK}\n0.50 0.50 0.50\n" in prompt
    assert prompt.endswith(f"Generate an element that could replace {MASK} in the bulk material:\n")
    with pytest.raises(ValueError, match="not in the structure"):
        infill_prompt(text, "O")

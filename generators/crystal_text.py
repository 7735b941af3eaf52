"""Crystals written as plain text for language models, in the layout of crystal-text-llm (Gruver et al. 2024).

The paper's LLM (arXiv 2410.06433) was fine-tuned on this layout:

    4.4 4.4 2.9          lattice lengths in Å, one decimal
    90 90 90             lattice angles in degrees, integers
    Mn                   then, per site, the element
    0.00 0.00 0.00       and its fractional coordinates, two decimals
    O
    0.31 0.31 0.00
    ...

A random translation is applied each time a structure is written, so the model sees many equivalent texts of
one crystal (crystal-text-llm's augmentation). The prompts follow crystal-text-llm's `llama_finetune.py`
wording (as remembered, not copied): "Below is a description of a bulk material. The chemical formula is ...
Generate a description of the lengths and angles ...", and the infill task with "[MASK]".
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping

import numpy as np
from pymatgen.core import Composition, Element, Lattice, Structure

from registry.science.validity import MAX_SITES, structure_problem

MASK = "[MASK]"
GENERATION_HEADER = "Below is a description of a bulk material. "
GENERATION_INSTRUCTION = (
    "Generate a description of the lengths and angles of the lattice vectors "
    "and then the element type and coordinates for each atom within the lattice:\n"
)
INFILL_HEADER = (
    f'Below is a partial description of a bulk material where one element has been replaced with the string "{MASK}":\n'
)
INFILL_INSTRUCTION = f"Generate an element that could replace {MASK} in the bulk material:\n"
COMPOSITION_PHRASE = "The chemical formula is"
PROPERTY_PHRASES = {
    "formation_energy_per_atom": "The formation energy per atom is",
    "band_gap": "The band gap is",
    "e_above_hull": "The energy above the convex hull is",
    "spacegroup.number": "The spacegroup number is",
}

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")  # no nan/inf/underscores, unlike float()


class CrystalTextError(ValueError):
    """The text is not a crystal in this layout, or the crystal it describes is unphysical."""


def structure_to_text(structure: Structure, rng: np.random.Generator | None = None, translate: bool = True) -> str:
    """Write an ordered structure; with `translate`, shift all sites by one random vector first (augmentation)."""
    if not structure.is_ordered:
        raise CrystalTextError("structure is disordered (partial occupancies): the text holds one element per site")
    frac = structure.frac_coords
    if translate:
        frac = frac + (rng if rng is not None else np.random.default_rng()).uniform(size=3)
    frac = np.round(frac % 1.0, 2) % 1.0  # 0.996 would print as 1.00: write it as 0.00, the same position
    lines = [" ".join(f"{x:.1f}" for x in structure.lattice.abc),
             " ".join(str(round(x)) for x in structure.lattice.angles)]
    for site, coords in zip(structure, frac, strict=True):
        lines.append(site.specie.symbol)
        lines.append(" ".join(f"{x:.2f}" for x in coords))
    return "\n".join(lines)


def text_to_structure(text: str) -> Structure:
    """Parse the layout back into a Structure; every way it can fail raises `CrystalTextError` with the reason."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 4:
        raise CrystalTextError(f"expected lengths, angles and at least one site (4 lines), got {len(lines)} lines")
    lengths = _numbers(lines[0], "lattice lengths (line 1)")
    angles = _numbers(lines[1], "lattice angles (line 2)")
    if any(x <= 0 for x in lengths):
        raise CrystalTextError(f"lattice lengths must be positive, got {lines[0]!r}")
    _check_angles(angles)
    site_lines = lines[2:]
    if len(site_lines) % 2:
        raise CrystalTextError(f"site {len(site_lines) // 2 + 1} has an element line but no coordinate line")
    if len(site_lines) // 2 > MAX_SITES:
        raise CrystalTextError(f"{len(site_lines) // 2} sites, more than the limit of {MAX_SITES}")
    species = [_element(line, i + 1) for i, line in enumerate(site_lines[0::2])]
    coords = [_numbers(line, f"coordinates of site {i + 1}") for i, line in enumerate(site_lines[1::2])]
    lattice = Lattice.from_parameters(*lengths, *angles)
    structure = Structure(lattice, species, coords, to_unit_cell=True)
    problem = structure_problem(structure)
    if problem:
        raise CrystalTextError(problem)
    return structure


def generation_prompt(
    composition: Composition | str | None = None, properties: Mapping[str, float] | None = None
) -> str:
    """The generation prompt, optionally conditioned on a formula (reduced, as MP's pretty_formula) and properties."""
    prompt = GENERATION_HEADER
    if composition is not None:
        try:
            formula = Composition(composition).reduced_formula
        except ValueError as exc:
            raise ValueError(f"cannot read composition {composition!r}: {exc}") from exc
        prompt += f"{COMPOSITION_PHRASE} {formula}. "
    for key, value in (properties or {}).items():
        if key not in PROPERTY_PHRASES:
            raise ValueError(f"unknown property {key!r}; known: {', '.join(PROPERTY_PHRASES)}")
        shown = int(value) if key == "spacegroup.number" else round(float(value), 4)
        prompt += f"{PROPERTY_PHRASES[key]} {shown}. "
    return prompt + GENERATION_INSTRUCTION


def infill_prompt(text: str, element: str) -> str:
    """The infill prompt: every site of `element` masked, the model answers with the element.

    Unlike crystal-text-llm's plain `str.replace`, only whole element lines are masked, so masking "O" leaves "Os"
    and masking "C" leaves "Co" intact.
    """
    lines = text.splitlines()
    if element not in lines[2::2]:
        raise ValueError(f"element {element!r} is not in the structure text")
    masked = lines[:2] + [MASK if i % 2 == 0 and line == element else line for i, line in enumerate(lines[2:])]
    return INFILL_HEADER + "\n".join(masked) + "\n" + INFILL_INSTRUCTION


def _numbers(line: str, what: str) -> list[float]:
    fields = line.split()
    if len(fields) != 3:
        raise CrystalTextError(f"{what}: expected 3 numbers, got {len(fields)} in {line[:80]!r}")
    if not all(_NUMBER.fullmatch(f) for f in fields):
        raise CrystalTextError(f"{what}: not numeric: {line[:80]!r}")
    values = [float(f) for f in fields]
    if not all(math.isfinite(v) for v in values):
        raise CrystalTextError(f"{what}: number out of range: {line[:80]!r}")
    return values


def _check_angles(angles: list[float]) -> None:
    """Three angles make a cell only if each is in (0, 180) and the squared volume factor is positive."""
    if not all(0 < a < 180 for a in angles):
        raise CrystalTextError(f"lattice angles must lie strictly between 0 and 180 degrees, got {angles}")
    ca, cb, cg = (math.cos(math.radians(a)) for a in angles)
    if 1 - ca * ca - cb * cb - cg * cg + 2 * ca * cb * cg <= 1e-6:
        raise CrystalTextError(f"lattice angles {angles} do not make a cell (zero or negative volume)")


def _element(line: str, site: int) -> str:
    # pymatgen also accepts the isotopes D and T; a crystal text names elements, so map back through Z to refuse them
    if not Element.is_valid_symbol(line) or Element.from_Z(Element(line).Z).symbol != line:
        raise CrystalTextError(f"site {site}: unknown element {line[:20]!r}")
    return line

"""New tunnel oxides from known ones by data-mined ionic substitution (Hautier et al., Inorg. Chem. 2011).

Each framework is decorated with oxidation states (bond valence, else the most likely charge-balanced guess from
common oxidation states) and its species are given a role:

- framework cations (transition metals) may become any transition-metal ion of pymatgen's substitution table;
- tunnel cations (H, alkali and alkaline-earth ions, and the working ions themselves) are kept or replaced by a
  working ion (Mg2+, Zn2+, Ca2+, Al3+ by default);
- anions and any other cation are kept.

Every species maps to one species (no partial substitution), so the structure keeps its topology. A substitution's
probability is pymatgen's `SubstitutionProbability.cond_prob_list` over all species, kept ones included, as
pymatgen's `Substitutor` computes it; only charge-balanced substitutions above `threshold` are considered. The
lattice is scaled isotropically by pymatgen's `RLSVolumePredictor` from ionic radii (atomic radii where an ionic
radius is missing); the shape of the cell and the positions are left to relaxation.
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import groupby
from typing import Any, ClassVar

from pymatgen.analysis.bond_valence import BVAnalyzer
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.analysis.structure_prediction.substitution_probability import SubstitutionProbability
from pymatgen.analysis.structure_prediction.volume_predictor import RLSVolumePredictor
from pymatgen.core import Composition, Element, Species, Structure
from pymatgen.core import __version__ as PYMATGEN_VERSION
from pymatgen.transformations.standard_transformations import SubstitutionTransformation

from generators.base import Generator
from registry.io.records import Record
from registry.science.validity import structure_problem
from schemas.structure import Origin, OriginKind

WORKING_IONS = ("Mg", "Zn", "Ca", "Al")
CHARGE_TOL = 1e-8


class FrameworkError(ValueError):
    """A framework that cannot be substituted; `kind` is the short reason summaries group by."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.detail = detail


@dataclass(frozen=True)
class Substitution:
    """One charge-balanced way to substitute a framework's species, with its data-mined probability."""

    mapping: dict[Species, Species]  # changed species only, old -> new
    probability: float
    ions: tuple[str, ...]  # working ions it puts into the tunnels

    @property
    def key(self) -> str:
        """Stable text id, e.g. `Fe3+>Ni2+,H+>Mg2+`."""
        return ",".join(f"{old}>{new}" for old, new in sorted(self.mapping.items(), key=lambda kv: str(kv[0])))


@dataclass
class SubstitutionCounts:
    """What one `generate` pass did: every candidate considered became an output, a reject, a duplicate or was
    left beyond the cap (candidates == outputs + rejected + duplicates + capped)."""

    frameworks: int = 0
    skipped: int = 0  # frameworks that could not be substituted (each written as a reject)
    barren: int = 0  # frameworks without any charge-balanced substitution above the threshold
    candidates: int = 0
    outputs: int = 0
    rejected: int = 0
    duplicates: int = 0
    capped: int = 0
    reasons: dict[str, int] = field(default_factory=dict)

    def reject(self, kind: str) -> None:
        self.reasons[kind] = self.reasons.get(kind, 0) + 1


def decorate(structure: Structure) -> Structure:
    """The structure with an oxidation state on every site; raises FrameworkError when none can be assigned.

    States already present are kept; otherwise bond valence (site-resolved, so mixed valence shows), else the
    most likely charge-balanced combination of common oxidation states.
    """
    if all(isinstance(sp, Species) and sp.oxi_state is not None for sp in structure.composition):
        return structure
    plain = structure.copy()
    plain.remove_oxidation_states()
    try:
        return BVAnalyzer().get_oxi_state_decorated_structure(plain)
    except ValueError as exc:
        bond_valence = str(exc)
    guesses = plain.composition.oxi_state_guesses()
    if not guesses:
        raise FrameworkError("no oxidation states", f"{plain.composition.reduced_formula}: bond valence says "
                             f"{bond_valence!r} and no combination of common oxidation states is charge-balanced")
    plain.add_oxidation_state_by_element(guesses[0])
    return plain


def _stable(probability: float) -> float:
    """Nine significant digits: pymatgen normalises by summing over a set, so the last bits (and the order of
    equally probable substitutions) would vary between processes."""
    return float(f"{probability:.9g}")


def _fingerprint(structure: Structure) -> str:
    payload = [[round(x, 6) for x in structure.lattice.matrix.flat], [s.species_string for s in structure],
               [round(x, 6) for x in structure.frac_coords.flat]]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


class SubstitutionGenerator(Generator):
    """Substituted variants of known frameworks: at most `max_per_parent` distinct new structures per framework.

    Candidates of a framework are taken most probable first, in turn from each tunnel outcome (tunnel cations kept,
    or replaced by each working ion): a working ion replacing K+ or H+ is 10 to 1000 times less probable in the
    data-mined table than a framework-metal swap, so a single ranking would never reach the working ions. An output
    that StructureMatcher finds equal to a framework or to an earlier output of the run is dropped as a duplicate
    (`filtered` in the run document). Frameworks are processed in id order, so the same frameworks and parameters
    give the same run id and the same outputs.
    """

    name = "substitution"
    version: ClassVar[str] = f"pymatgen-{PYMATGEN_VERSION}:hautier2011-substitution:rls-volume"

    def __init__(self, frameworks: Sequence[tuple[str, Structure]], threshold: float = 1e-5,
                 max_per_parent: int = 20, ions: Iterable[str] = WORKING_IONS, selection: Any = None) -> None:
        """`frameworks` are (registry id, structure) pairs; `selection` records how the caller chose them (a query,
        CIF paths) in the run's parameters without changing the run id."""
        if not 0 < threshold < 1:
            raise ValueError(f"threshold is a probability in (0, 1), got {threshold}")
        if max_per_parent < 1:
            raise ValueError(f"max_per_parent must be at least 1, got {max_per_parent}")
        ids = [fid for fid, _ in frameworks]
        repeated = sorted({fid for fid in ids if ids.count(fid) > 1})
        if repeated:
            raise ValueError(f"framework ids must be unique; repeated: {', '.join(repeated)}")
        self.frameworks = sorted(frameworks, key=lambda f: f[0])
        self.threshold = threshold
        self.max_per_parent = max_per_parent
        self.model = SubstitutionProbability()
        self.ions = tuple(sorted({str(e).strip() for e in ions}))
        unknown = [e for e in self.ions if not Element.is_valid_symbol(e)]
        if unknown:
            raise ValueError(f"unknown working-ion elements: {', '.join(unknown)}")
        self.ion_species = sorted((sp for sp in self.model.species if sp.symbol in self.ions), key=str)
        missing = sorted(set(self.ions) - {sp.symbol for sp in self.ion_species})
        if missing:
            raise ValueError(f"no ion of {', '.join(missing)} in the data-mined substitution table")
        self.tunnel_elements = frozenset(self.ions) | {
            e.symbol for e in Element if e.is_alkali or e.is_alkaline or e.symbol == "H"}
        self.metal_species = sorted((sp for sp in self.model.species if sp.element.is_transition_metal
                                     and sp.symbol not in self.tunnel_elements), key=str)
        self.selection = selection
        self.counts = SubstitutionCounts()
        self._option_cache: dict[tuple[str, str], list[tuple[Species, float]]] = {}

    @property
    def filtered(self) -> int:
        """Duplicates dropped in the last `generate` pass (read by `run_generator`)."""
        return self.counts.duplicates

    def source(self) -> dict[str, Any]:
        """What identifies the run: the frameworks' content and the substitution settings."""
        digest = hashlib.sha256("\n".join(f"{fid} {_fingerprint(s)}" for fid, s in self.frameworks).encode())
        return {"frameworks_sha256": digest.hexdigest(), "threshold": self.threshold,
                "max_per_parent": self.max_per_parent, "ions": list(self.ions)}

    def parameters(self) -> dict[str, Any]:
        return {**self.source(), "frameworks": [fid for fid, _ in self.frameworks], "selection": self.selection}

    def run_id(self) -> str:
        """From `source()` alone: how the frameworks were selected does not make it another run."""
        payload = json.dumps([self.name, self.version, self.source()], sort_keys=True)
        return f"{self.name}-{hashlib.sha256(payload.encode()).hexdigest()[:12]}"

    def substitutions(self, composition: Composition) -> list[Substitution]:
        """Charge-balanced substitutions of an oxidation-state-decorated composition above the threshold.

        Raises FrameworkError when the composition has no transition-metal cation or a species the table lacks.
        """
        olds = sorted(composition, key=str)
        outside = [str(sp) for sp in olds if sp not in self.model.species]
        if outside:
            raise FrameworkError("species not in the substitution table", ", ".join(outside))
        roles = [self._role(sp) for sp in olds]
        if "framework" not in roles:
            raise FrameworkError("no transition-metal cation",
                                 f"{composition.reduced_formula} has none outside the tunnel elements")
        # per species: (new species, its name, conditional probability, charge it brings), most probable first
        options = [[(new, str(new), factor, new.oxi_state * composition[old])
                    for new, factor in self._options(old, role)] for old, role in zip(olds, roles, strict=True)]
        best_rest = [math.prod(opts[0][2] if opts else 0.0 for opts in options[i:]) for i in range(len(olds) + 1)]
        names = [str(sp) for sp in olds]
        found: list[Substitution] = []

        def extend(chosen: list[tuple[Species, str]], p: float, charge: float) -> None:
            """Branch and bound as pymatgen's Substitutor does: `p` is the product of the conditional probabilities
            so far, i.e. `cond_prob_list` once every species is chosen."""
            i = len(chosen)
            if p * best_rest[i] <= self.threshold:
                return
            if i < len(olds):
                for new, name, factor, q in options[i]:
                    extend([*chosen, (new, name)], p * factor, charge + q)
                return
            labels = [name for _, name in chosen]
            if labels == names or len(set(labels)) < len(labels) or abs(charge) > CHARGE_TOL:
                return
            mapping = {old: new for old, (new, label), name in zip(olds, chosen, names, strict=True) if name != label}
            ions = tuple(sorted({new.symbol for old, new in mapping.items() if self._role(old) == "tunnel"}))
            found.append(Substitution(mapping, _stable(p), ions))

        extend([], 1.0, 0.0)
        return found

    def _role(self, species: Species) -> str:
        if species.oxi_state <= 0:
            return "kept"
        if species.symbol in self.tunnel_elements:
            return "tunnel"
        return "framework" if species.element.is_transition_metal else "kept"

    def _options(self, species: Species, role: str) -> list[tuple[Species, float]]:
        """What a species may become, with its conditional probability, most probable first."""
        key = (str(species), role)
        if key not in self._option_cache:
            self._option_cache[key] = self._rank_options(species, role)
        return self._option_cache[key]

    def _rank_options(self, species: Species, role: str) -> list[tuple[Species, float]]:
        targets = {"framework": self.metal_species, "tunnel": self.ion_species}.get(role, [])
        pairs = [(new, self.model.cond_prob(new, species)) for new in {species, *targets}]
        return sorted((pair for pair in pairs if pair[1] > self.threshold), key=lambda pair: (-pair[1], str(pair[0])))

    def ordered(self, substitutions: list[Substitution]) -> list[Substitution]:
        """Most probable first within each tunnel outcome, taken in turn across outcomes."""
        by_outcome = sorted(substitutions, key=lambda s: (s.ions, -s.probability, s.key))
        ranked = [(rank, s) for _, group in groupby(by_outcome, key=lambda s: s.ions) for rank, s in enumerate(group)]
        return [s for _, s in sorted(ranked, key=lambda rs: (rs[0], -rs[1].probability, rs[1].key))]

    def generate(self, run_id: str) -> Iterator[Record]:
        self.counts = SubstitutionCounts()
        matcher = StructureMatcher()
        known: dict[str, list[Structure]] = {}  # reduced formula -> frameworks and outputs so far
        for _, structure in self.frameworks:
            plain = structure.copy()
            plain.remove_oxidation_states()
            known.setdefault(plain.composition.reduced_formula, []).append(plain)
        for parent_id, structure in self.frameworks:
            self.counts.frameworks += 1
            yield from self._substitute(run_id, parent_id, structure, known, matcher)

    def _origin(self, run_id: str, parent_id: str, substitution: Substitution | None = None,
                **details: Any) -> Origin:
        parameters: dict[str, Any] = {"parent": parent_id}
        if substitution is not None:
            parameters |= {"substitution": {str(o): str(n) for o, n in substitution.mapping.items()},
                           "probability": substitution.probability, "ions": list(substitution.ions), **details}
        suffix = f":{substitution.key}" if substitution else ""
        return Origin(kind=OriginKind.generated, source="substitution", source_id=f"{run_id}:{parent_id}{suffix}",
                      generator=self.name, version=self.version, run_id=run_id, parameters=parameters)

    def _substitute(self, run_id: str, parent_id: str, parent: Structure, known: dict[str, list[Structure]],
                    matcher: StructureMatcher) -> Iterator[Record]:
        try:
            problem = structure_problem(parent)
            if problem:
                raise FrameworkError("unusable framework", problem)
            decorated = decorate(parent)
            candidates = self.ordered(self.substitutions(decorated.composition))
        except FrameworkError as exc:
            self.counts.skipped += 1
            self.counts.reject(exc.kind)
            yield Record.reject(self._origin(run_id, parent_id), f"{exc.kind}: {parent_id}: {exc.detail}")
            return
        self.counts.barren += not candidates
        self.counts.candidates += len(candidates)
        kept = 0
        for n, substitution in enumerate(candidates):
            if kept == self.max_per_parent:
                self.counts.capped += len(candidates) - n
                return
            structure, scaling = _scaled(SubstitutionTransformation(substitution.mapping).apply_transformation(
                decorated), decorated)
            origin = self._origin(run_id, parent_id, substitution, volume_scaling=scaling,
                                  volume_ratio=round(structure.volume / parent.volume, 6))
            structure.remove_oxidation_states()
            problem = structure_problem(structure)
            if problem:
                self.counts.rejected += 1
                self.counts.reject("unphysical substituted structure")
                yield Record.reject(origin, f"unphysical substituted structure: {parent_id} {substitution.key}: "
                                    f"{problem}", raw=structure.to(fmt="poscar"))
                continue
            same_formula = known.setdefault(structure.composition.reduced_formula, [])
            if any(matcher.fit(structure, other) for other in same_formula):
                self.counts.duplicates += 1
                continue
            same_formula.append(structure)
            kept += 1
            self.counts.outputs += 1
            yield Record(origin, structure)


def _scaled(structure: Structure, parent: Structure) -> tuple[Structure, str]:
    """The substituted structure at the volume RLS predicts from the parent's by ionic radii, and how it was scaled.

    Without an ionic radius for every species (H+ has none) the parent's volume is kept: atomic radii would turn
    H+ -> Mg2+ into a threefold volume, which is worse than leaving it to relaxation.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pymatgen warns when it falls back to Shannon radii
        missing = sorted({str(sp) for sp in [*structure.composition, *parent.composition] if sp.ionic_radius is None})
        if missing:
            return structure, f"none: no ionic radius for {', '.join(missing)}"
        volume = RLSVolumePredictor(check_isostructural=False, radii_type="ionic", use_bv=False).predict(
            structure, parent)
    structure.scale_lattice(volume)
    return structure, "ionic radii"

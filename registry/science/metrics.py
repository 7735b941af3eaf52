"""CDVAE's generation validity metrics of a run (Xie et al. 2022), so runs can be compared with published figures.

As in CDVAE's `scripts/compute_metrics.py`, fractions are over every sample the generator produced: a sample that
could not be parsed counts as invalid in both respects, and it stays in the denominator. Validity itself comes
from `registry.science.validity`, the same code the validate builder uses.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass

from registry.io.records import Record
from registry.science.validity import composition_validity, structure_validity


@dataclass(frozen=True)
class GenerationMetrics:
    """Validity counts and fractions over all samples, and the spread of compositions over the parsed ones."""

    n_samples: int
    n_rejected: int
    n_comp_valid: int
    n_struct_valid: int
    n_valid: int
    comp_valid: float
    struct_valid: float
    valid: float
    n_elements: dict[int, int]  # number of distinct elements -> parsed samples with that many
    n_unique_formulas: int  # distinct reduced formulas among parsed samples

    def as_dict(self) -> dict[str, object]:
        """For a `generation_runs` document (BSON needs string keys)."""
        return {**asdict(self), "n_elements": {str(k): v for k, v in sorted(self.n_elements.items())}}


class GenerationTally:
    """Accumulates the metrics while records stream past, so a run is not read twice.

    `observe` passes records through unchanged; use it around a generator's output, then call `result()`.
    """

    def __init__(self) -> None:
        self.n_samples = self.n_rejected = self.n_comp_valid = self.n_struct_valid = self.n_valid = 0
        self.n_elements: Counter[int] = Counter()
        self.formulas: set[str] = set()

    def add(self, record: Record) -> None:
        self.n_samples += 1
        structure = record.structure
        if structure is None:
            self.n_rejected += 1
            return
        composition = structure.composition
        comp_ok = composition_validity(composition)
        struct_ok = structure_validity(structure)
        self.n_comp_valid += comp_ok
        self.n_struct_valid += struct_ok
        self.n_valid += comp_ok and struct_ok
        self.n_elements[len(composition.elements)] += 1
        self.formulas.add(composition.reduced_formula)

    def observe(self, records: Iterable[Record]) -> Iterator[Record]:
        for record in records:
            self.add(record)
            yield record

    def result(self) -> GenerationMetrics:
        n = self.n_samples

        def fraction(count: int) -> float:
            return count / n if n else 0.0

        return GenerationMetrics(
            n_samples=n, n_rejected=self.n_rejected, n_comp_valid=self.n_comp_valid,
            n_struct_valid=self.n_struct_valid, n_valid=self.n_valid, comp_valid=fraction(self.n_comp_valid),
            struct_valid=fraction(self.n_struct_valid), valid=fraction(self.n_valid),
            n_elements=dict(self.n_elements), n_unique_formulas=len(self.formulas),
        )


"""screen: validated -> screened. One static energy and the working ions' free spheres per structure, before any
relaxation.

Relaxation only lowers the energy, so a structure whose unrelaxed energy is already far above a limit of the preset
(E_hull, E_form) can pass it only if relaxation brings it down by more than `margin`. On the first 1,000 of the
paper's CDVAE samples the drop had a median of 0.14 eV/atom and a 95th percentile of 0.76 (`bench/funnel.py`
measures it, and counts the structures a screen would have held back wrongly). So the default margin of
0.5 eV/atom can hold back a structure that starts far from its minimum and that relaxation would have rescued; it
buys one forward pass instead of tens for everything it holds back. `--margin` sets it; `--exhaustive` turns the
screen off. The screen records the static values; the relax stage applies the limits of the preset in use, lowest
static E_hull first.

The free sphere (Zeo++ Df, no BVSE: tens of ms) lets a preset that needs the channel to admit the ion (`tunnel`)
skip relaxing structures far too dense for it. Relaxation moves Df too (by up to 1.3 Å on CDVAE samples), so the
cut-off is 2 r(ion) less a channel margin. On the first 1,000 of the paper's samples with this screen off (157
relaxed with a channel analysis, 25 passing both channel criteria), a margin of 0.2 Å would have held back 78 and
lost 4 of the 25; 0.3 Å, 63 and 2; 0.4 Å (the default), 47 and 1; 0.6 Å, 16 and none. `bench/funnel.py` prints this check, the
structures it would have held back wrongly. Free spheres are computed only for such a preset (`ions` empty
otherwise); a structure screened without them is never held back for its channel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from maggma.core import Store
from pymatgen.core import Composition, Structure

from builders.stage import StageBuilder
from registry.db.known import KnownCompounds
from registry.science.channels import DEFAULT_IONS, analyze_channels
from registry.science.references import formation_energy_per_atom
from schemas.base import to_mongo
from schemas.relaxed import PotentialInfo
from schemas.screened import ScreenedDoc
from schemas.stage import Provenance, State

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "structure", "structure_updated"]


class ScreenBuilder(StageBuilder):
    stage = "screen"
    dependency_field = "chemsys"

    def __init__(self, validated: Store, screened: Store, references: Store, reference_sets: Store, structures: Store,
                 query: dict | None = None,
                 potential: str = "chgnet", device: str = "cpu", ions: Sequence[str] = DEFAULT_IONS,
                 batch_size: int = 32, **kwargs: Any):
        """`validated` must use `structure_updated` as its last_updated field (as for relax); `references`,
        `reference_sets` and `structures` supply the known compounds of the reference hull (`registry.db.known`)."""
        self.validated = validated
        self.screened = screened
        self.references, self.reference_sets, self.structures = references, reference_sets, structures
        self.known = KnownCompounds(references, reference_sets, structures)
        self.potential = potential
        self.device = device
        self.ions = list(ions)
        scope = {"valid": True, "state": State.successful.value, **(query or {})}
        super().__init__(validated, screened, query=scope, projection=SOURCE_FIELDS, batch_size=batch_size,
                         reads=[references, reference_sets, structures], **kwargs)

    def parameters(self) -> dict[str, Any]:
        return {"potential": self.potential, "ions": self.ions}

    def dependency_time(self, chemsys: str) -> datetime | None:
        return self.known.updated(chemsys)

    def process_groups(self, groups: list[dict]) -> list[dict]:
        """One batched static energy for the whole batch; a structure that breaks it is evaluated alone."""
        from registry.science.potentials import checked_potential

        items = [g["docs"][0] for g in groups]
        potential, info = checked_potential(self.potential, self.device)
        provenance = Provenance(builder="screen", model=potential.name, model_version=potential.version,
                                parameters={"ions": self.ions, "free_sphere": "zeo++ (pyzeo), Shannon radii"})
        energies = [math.nan if isinstance(e, Exception) else e  # a structure that breaks the batch fails alone
                    for e in potential.energy_per_atom_each([Structure.from_dict(d["structure"]) for d in items])]
        return [self._doc(d, e, info, provenance) for d, e in zip(items, energies, strict=True)]

    def _doc(self, item: dict, energy: float, info: PotentialInfo, provenance: Provenance) -> dict:
        base = {"registry_id": item["registry_id"], "formula_pretty": item["formula_pretty"],
                "chemsys": item["chemsys"]}
        try:
            if not math.isfinite(energy):
                raise ValueError(f"static energy is not a finite number ({energy})")
            e_form = formation_energy_per_atom(Composition(item["formula_pretty"]), energy)
            e_hull = self.known.hull(item["chemsys"]).evaluate(item["formula_pretty"], e_form).e_above_hull
        except Exception as exc:
            return self.failed(item, f"screen failed: {exc}")
        free_sphere, channel_error = {}, None
        if self.ions:
            channels = analyze_channels(Structure.from_dict(item["structure"]), self.ions, bvse=False)
            free_sphere = {ion: ch.free_sphere for ion, ch in channels.ions.items()}
            channel_error = channels.error or channels.zeopp_error
        return to_mongo(ScreenedDoc(
            **base, provenance=provenance, static_energy_per_atom=energy, static_formation_energy_per_atom=e_form,
            static_e_above_hull=e_hull, potential=info, static_free_sphere=free_sphere,
            static_channel_error=channel_error))

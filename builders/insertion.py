"""insertion: tunnels + relaxed (+ mined references) -> insertion. ML insertion voltage and capacity of each
working ion whose channel is open in a framework (see `registry.science.insertion`).

Source documents are the tunnels stage's, so a framework is redone when its channels were (after a new
relaxation), or its relaxed structure or reference hulls changed. Ions are incremental too: asking for other ions
revisits every framework, keeping the ions a document already has.
The model loads lazily, once per process, never in `__init__` (maggma pickles builders to its workers), and must
pass the model check: a refused model stops the stage before anything is written.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from maggma.core import Store
from pymatgen.core import Structure

from builders.stage import StageBuilder
from registry.db.known import KnownCompounds
from registry.db.stores import naive_utc, query_among
from registry.science.channels import DEFAULT_IONS, working_ion
from registry.science.hull import subsystems
from registry.science.insertion import InsertionSettings, IonInsertion, insert
from schemas.base import to_mongo
from schemas.insertion import InsertionDoc
from schemas.relaxed import PotentialInfo
from schemas.stage import Provenance, State

if TYPE_CHECKING:
    from registry.science.potentials import Potential

SOURCE_FIELDS = ["registry_id", "formula_pretty", "chemsys", "admits", "report.channel_axis.uvw"]
RELAXED_FIELDS = ["registry_id", "structure", "energy_per_atom", "status", "potential.spec"]
NOT_ADMITTED = "the tunnels stage found no open channel for it"


class InsertionBuilder(StageBuilder):
    stage = "insertion"
    dependency_field = "chemsys"

    def __init__(self, tunnels: Store, relaxed: Store, references: Store, reference_sets: Store, structures: Store,
                 insertion: Store,
                 ions: Sequence[str] = DEFAULT_IONS, query: dict | None = None, potential: str = "chgnet",
                 device: str = "cpu", only_admitted: bool = True, settings: InsertionSettings | None = None,
                 **kwargs: Any):
        """`references`, `reference_sets` and `structures` supply the known compounds for E_hull (`registry.db.known`).
        With `only_admitted`, an ion is inserted only where the tunnels stage says the channel admits it."""
        self.tunnels, self.relaxed, self.structures, self.insertion = tunnels, relaxed, structures, insertion
        self.references, self.reference_sets = references, reference_sets
        self.ions = list(ions)
        self.potential = potential
        self.device = device
        self.only_admitted = only_admitted
        self.settings = settings or InsertionSettings()
        clauses: list[dict] = [{"state": State.successful.value}, query or {}]
        if only_admitted:
            clauses.append({"$or": [{f"admits.{ion}": True} for ion in self.ions]})
        kwargs.setdefault("chunk_size", 1)
        self.known = KnownCompounds(references, reference_sets, structures)
        super().__init__(tunnels, insertion, query={"$and": clauses}, projection=SOURCE_FIELDS, inputs=[relaxed],
                         reads=[references, reference_sets, structures], **kwargs)

    def parameters(self) -> dict[str, Any]:
        """Another set of ions revisits every framework; the ions it already has are kept (`previous`)."""
        return {"ions": sorted(self.ions), "potential": self.potential}

    def _systems(self, chemsys: str) -> list[str]:
        return ["-".join(sorted({*chemsys.split("-"), ion})) for ion in self.ions]

    def dependency_time(self, chemsys: str) -> datetime | None:
        """The reference hulls of the framework's system with each ion."""
        return max((t for s in self._systems(chemsys) if (t := self.known.updated(s)) is not None),
                   default=None, key=naive_utc)

    def context(self, groups: list[dict]) -> None:
        """The known compounds of each framework's systems with each ion, and the ions its insertion document
        already has when that document was built from the same inputs."""
        ids = [g["group"] for g in groups]
        previous = {} if self.force else {d["registry_id"]: d for d in query_among(
            self.insertion, "registry_id", ids, properties=["registry_id", "sources_updated", "ions", "skipped_ions"])}
        systems = {g["group"]: self._systems(g["docs"][0]["chemsys"]) for g in groups}
        wanted = sorted({s for chemsys in systems.values() for c in chemsys for s in subsystems(c)})
        references = self.known.entries(wanted)
        for g in groups:
            inside = {s for c in systems[g["group"]] for s in subsystems(c)}
            prev = previous.get(g["group"])
            current = prev is not None and prev.get("sources_updated") is not None and g["sources_updated"] is not None \
                and naive_utc(prev["sources_updated"]) >= naive_utc(g["sources_updated"])
            g["previous"] = prev if current else None
            g["references"] = [r for r in references if r.composition.chemical_system in inside]

    # --- one framework ---

    def process_group(self, group: dict) -> list[dict]:
        """The document, whatever happened to each ion: a refused model stops the stage (a RegistryError); anything
        else becomes the framework's reason."""
        potential, info, provenance = self._context()
        item = {**group["docs"][0], "relaxed": group["inputs"].get("relaxed"), "previous": group["previous"],
                "references": group["references"]}
        try:
            return [self._build(item, potential, info, provenance)]
        except Exception as exc:
            return [self._doc(item, info, provenance, {}, {}, f"insertion failed: {type(exc).__name__}: {exc}")]

    def _context(self) -> tuple[Potential, PotentialInfo, Provenance]:
        from registry.science.potentials import checked_potential

        potential, info = checked_potential(self.potential, self.device)  # ModelCheckError: the stage stops
        provenance = Provenance(builder="insertion", model=potential.name, model_version=potential.version,
                                parameters={"ions": self.ions, "potential": self.potential,
                                            "only_admitted": self.only_admitted, **self.settings.model_dump()})
        return potential, info, provenance

    def _build(self, item: dict, potential: Potential, info: PotentialInfo, provenance: Provenance) -> dict:
        prev = item.get("previous") or {}
        ions = {ion: IonInsertion.model_validate(r) for ion, r in (prev.get("ions") or {}).items()}
        skipped = {ion: why for ion, why in (prev.get("skipped_ions") or {}).items() if ion not in self.ions}
        todo = []
        for ion in self.ions:
            if ion in ions:
                continue
            if self.only_admitted and not (item.get("admits") or {}).get(ion):
                skipped[ion] = NOT_ADMITTED
            else:
                todo.append(ion)
        if todo:
            try:
                host, host_energy = self._host(item.get("relaxed"))
            except Exception as exc:  # every ion fails for the framework's reason, and is not retried
                model = f"{potential.name} [{potential.version}]"
                ions |= {ion: IonInsertion(ion=str(working_ion(ion)), state="failed", error=str(exc), model=model,
                                           settings=self.settings) for ion in todo}
                todo = []
            uvw = ((item.get("report") or {}).get("channel_axis") or {}).get("uvw")
            for ion in todo:
                ions[ion] = insert(host, ion, potential, self.settings, channel_uvw=uvw, references=item["references"],
                                   host_energy_per_atom=host_energy)
        return self._doc(item, info, provenance, ions, skipped)

    def _host(self, relaxed: dict | None) -> tuple[Structure, float | None]:
        """The relaxed framework, and its energy when the relax stage used this same potential and converged."""
        if relaxed is None or relaxed.get("structure") is None:
            raise ValueError("no relaxed structure for this framework")
        try:
            host = Structure.from_dict(relaxed["structure"])
        except Exception as exc:
            raise ValueError(f"unreadable relaxed structure: {type(exc).__name__}: {exc}") from None
        same_model = (relaxed.get("potential") or {}).get("spec") == self.potential
        return host, relaxed.get("energy_per_atom") if same_model and relaxed.get("status") == "converged" else None

    @staticmethod
    def _doc(item: dict, info: PotentialInfo, provenance: Provenance, ions: dict[str, IonInsertion],
             skipped: dict[str, str], error: str | None = None) -> dict:
        if error is None and not any(r.state == "successful" for r in ions.values()):
            error = "; ".join(f"{ion}: {r.error}" for ion, r in ions.items()) or \
                    "; ".join(f"{ion}: {why}" for ion, why in skipped.items()) or "no ion requested"
        doc = InsertionDoc(registry_id=item["registry_id"], state=State.failed if error else State.successful,
                           error=error, provenance=provenance, formula_pretty=item["formula_pretty"],
                           chemsys=item["chemsys"], potential=info, ions=ions, skipped_ions=skipped)
        return to_mongo(doc)

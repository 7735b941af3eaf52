"""The build chain: which builder makes each stage, in which order, from which stores.

    structures -> validated -> screened -> relaxed -> refined -> predicted -> stability -> tunnels -> insertion
    -> (dft_comparison) -> candidates -> funnel -> optimade_structures (the OPTIMADE view, with candidate sets)

The funnel: the preset's prefilter (composition, novelty) narrows what is screened; one static energy per
structure (screen) holds back what relaxation cannot bring under the preset's E_hull limit; relax takes the rest,
lowest static E_hull first; refine recomputes, with the accurate second-tier potential, the energy of what
relaxation left within the E_hull limit plus the refine margin, and predict and stability use it; tunnels analyses
only what is under the E_hull limit after that; insertion (the costliest per structure) takes only those whose
channel admits an ion it is asked for.
`exhaustive=True` turns the screen and the E_hull gates off.

`build(reg, "all")` runs every stage in order; each is incremental, so a second run does no work.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from maggma.core import Store

from builders.run import StageReport, run_builder
from builders.stage import StageBuilder
from registry.db.known import LoadReport, ensure_references

if TYPE_CHECKING:
    from registry.db.client import Registry

@dataclass
class BuildOptions:
    """Everything a user can set on `registry build`."""

    force: bool = False
    potential: str = "chgnet"  # tier one: screen, relaxation, insertion (docs/potentials.md says why)
    refine_potential: str | None = "sevenn:7net-0"  # tier two: the survivors' energies; None (or "none"): off
    refine_margin: float = 0.05  # eV/atom the second tier may bring a structure below the first tier's E_hull (see docs)
    device: str = "cpu"
    fmax: float = 0.1
    steps: int = 500
    relax_batch: int = 8
    workers: int = 1
    bandgap_model: str | None = None
    ions: tuple[str, ...] = ("Mg", "Zn", "Ca", "Al")
    ion: str = "Mg"
    preset: str = "tunnel"
    scope: dict[str, Any] | None = None  # Mongo filter on validated docs: what to relax; None: the preset's prefilter
    exhaustive: bool = False  # relax everything in scope and analyse every relaxed structure's channels
    margin: float = 0.5  # eV/atom relaxation may bring a structure down (the screen's allowance)
    channel_margin: float = 0.4  # Å relaxation may widen the ranked ion's free sphere (the screen's allowance)
    # Insertion caps (registry.science.insertion.InsertionSettings). The defaults keep `build all` to about one relaxation
    # per admitted framework: the ranked ion only, the fully discharged state only, one ordering.
    insertion_ions: tuple[str, ...] = ()  # (): the ranked ion `ion`
    insertion_sites: int = 4  # symmetry-distinct BVSE sites tried (cheap: no relaxation each)
    insertion_levels: int = 1  # ion contents relaxed between the empty host and the maximum
    insertion_configurations: int = 1  # orderings relaxed per ion content
    insertion_steps: int = 200  # relaxation step limit of each intercalated structure

    def relax_scope(self) -> dict[str, Any]:
        from registry.science.criteria import get_preset

        return get_preset(self.preset).prefilter() if self.scope is None else self.scope

    def e_above_hull(self) -> float | None:
        from registry.science.criteria import get_preset

        return get_preset(self.preset).threshold("e_above_hull")


def _known(reg: Registry) -> tuple[Store, Store, Store]:
    """The stores known compounds are read from (`registry.db.known.KnownCompounds`)."""
    return reg.store("references"), reg.store("reference_sets"), reg.store("structures")


def _validate(reg: Registry, o: BuildOptions) -> StageBuilder:
    from builders.validate import ValidateBuilder

    return ValidateBuilder(reg.store("structures"), reg.store("references"), reg.store("reference_sets"),
                           reg.store("validated"), force=o.force)


def _screen_limits(o: BuildOptions) -> dict[str, float]:
    """The static screen's cut-offs for this build; empty when nothing is screened."""
    from registry.science.criteria import get_preset

    return {} if o.exhaustive else get_preset(o.preset).screen_limits(o.margin)


def _channel_limit(o: BuildOptions) -> float | None:
    """The static screen's free-sphere cut-off for the ranked ion; None when nothing is screened for it."""
    from registry.science.criteria import get_preset

    return get_preset(o.preset).channel_limit(o.ion, o.channel_margin) if _screen_limits(o) else None


def _screen(reg: Registry, o: BuildOptions) -> StageBuilder | None:
    """Free spheres only for a preset that gates on them (they cost ~0.2 s a structure, mostly oxidation states)."""
    from builders.screen import ScreenBuilder

    if not _screen_limits(o):
        return None
    return ScreenBuilder(reg.store("validated", last_updated_field="structure_updated"), reg.store("screened"),
                         *_known(reg), query=o.relax_scope(), potential=o.potential, device=o.device,
                         ions=o.ions if _channel_limit(o) is not None else (), force=o.force)


def _relax(reg: Registry, o: BuildOptions) -> StageBuilder:
    from builders.relax import RelaxBuilder

    limits = _screen_limits(o)
    query: dict[str, Any] = {"state": "successful", **{field: {"$lte": limit} for field, limit in limits.items()}}
    if (channel := _channel_limit(o)) is not None:
        free_sphere = f"static_free_sphere.{o.ion}"  # None (not computed) is not held back
        query["$or"] = [{free_sphere: {"$gte": channel}}, {free_sphere: None}]
    gate = {} if not limits else {"gate": reg.store("screened"), "gate_query": query, "order_by": "static_e_above_hull"}
    return RelaxBuilder(reg.store("validated", last_updated_field="structure_updated"), reg.store("relaxed"),
                        query=o.relax_scope(), potential=o.potential, device=o.device, fmax=o.fmax, steps=o.steps,
                        batch_size=o.relax_batch, force=o.force, **gate)


def _refine_spec(o: BuildOptions) -> str | None:
    return None if o.refine_potential in (None, "", "none") else o.refine_potential


def _refine(reg: Registry, o: BuildOptions) -> StageBuilder | None:
    """Within the preset's E_hull limit plus the refine margin (everything when exhaustive or without a limit)."""
    from builders.refine import RefineBuilder

    if (spec := _refine_spec(o)) is None:
        return None
    limit = o.e_above_hull()
    return RefineBuilder(reg.store("relaxed"), reg.store("refined"), *_known(reg), potential=spec, device=o.device,
                         max_e_above_hull=None if o.exhaustive or limit is None else limit + o.refine_margin,
                         force=o.force)


def _predict(reg: Registry, o: BuildOptions) -> StageBuilder:
    from builders.predict import PredictBuilder

    return PredictBuilder(reg.store("relaxed"), reg.store("predicted"), reg.store("refined"),
                          refine_potential=_refine_spec(o), bandgap_model=o.bandgap_model, force=o.force)


def _stability(reg: Registry, o: BuildOptions) -> StageBuilder:
    from builders.stability import StabilityBuilder

    return StabilityBuilder(reg.store("predicted"), *_known(reg), reg.store("stability"),
                            force=o.force)


def _hull_gate(reg: Registry, o: BuildOptions) -> dict[str, Any]:
    """Only what is under the preset's E_hull limit after relaxation; nothing held back when exhaustive."""
    limit = o.e_above_hull()
    return {} if o.exhaustive or limit is None else {
        "gate": reg.store("stability"), "gate_query": {"state": "successful", "e_above_hull": {"$lte": limit}}}


def _tunnels(reg: Registry, o: BuildOptions) -> StageBuilder:
    from builders.tunnels import TunnelsBuilder

    return TunnelsBuilder(reg.store("relaxed"), reg.store("tunnels"), ions=o.ions, force=o.force,
                          **_hull_gate(reg, o))


def _insertion(reg: Registry, o: BuildOptions) -> StageBuilder:
    """Under the E_hull gate, and only for ions whose channel the tunnels stage found open (the builder's
    default): a framework costs one batch of relaxations per ion."""
    from builders.insertion import InsertionBuilder
    from registry.science.insertion import InsertionSettings

    settings = InsertionSettings(max_sites=o.insertion_sites, max_levels=o.insertion_levels,
                                 max_configurations=o.insertion_configurations, steps=o.insertion_steps, fmax=o.fmax)
    return InsertionBuilder(reg.store("tunnels"), reg.store("relaxed"), *_known(reg), reg.store("insertion"),
                            ions=o.insertion_ions or (o.ion,), potential=o.potential, device=o.device,
                            settings=settings, force=o.force, **_hull_gate(reg, o))


def _dft(reg: Registry, o: BuildOptions) -> StageBuilder:
    """Validated when DFT puts it within the preset's E_hull limit (0.1 eV/atom for tunnel)."""
    from builders.dft import DftBuilder
    from registry.output.parity import stability_threshold

    return DftBuilder(reg.store("dft"), reg.store("relaxed"), reg.store("predicted"), reg.store("stability"),
                      *_known(reg), reg.store("dft_comparison"), e_hull_threshold=stability_threshold(o.preset),
                      force=o.force)


def _rank(reg: Registry, o: BuildOptions) -> StageBuilder:
    from builders.rank import RankBuilder

    return RankBuilder(*(reg.store(n) for n in ("validated", "relaxed", "predicted", "stability", "tunnels",
                                                "dft_comparison", "insertion", "candidates")),
                       preset=o.preset, ion=o.ion, force=o.force)


def _funnel(reg: Registry, o: BuildOptions) -> StageBuilder:
    from builders.funnel import FunnelBuilder

    return FunnelBuilder(*(reg.store(n) for n in ("validated", "screened", "relaxed", "predicted", "stability",
                                                  "tunnels", "candidates", "funnel")),
                         preset=o.preset, ion=o.ion, scope=o.relax_scope(), margin=o.margin,
                         channel_margin=o.channel_margin, exhaustive=o.exhaustive)


def _optimade(reg: Registry, o: BuildOptions) -> StageBuilder:
    """Every structure, whatever the options: the view serves the whole registry."""
    from builders.optimade import OptimadeBuilder

    return OptimadeBuilder(*(reg.store(n) for n in ("structures", "validated", "relaxed", "predicted", "stability",
                                                    "tunnels", "insertion", "candidates")),
                           reg.store("candidate_sets", key="name", last_updated_field="updated_at"),
                           reg.store("optimade_structures"), force=o.force)


@dataclass(frozen=True)
class Stage:
    """One stage of the chain: everything else (the CLI, the runner, the reliability harness) reads this table."""

    name: str
    builder: str  # module:class, for people reading the table
    sources: tuple[str, ...]  # collections it reads (the first is the one it maps or groups)
    target: str  # the collection it writes; its schema is in registry.db.stores.COLLECTIONS
    parallel: bool  # whether --workers applies
    make: Callable[[Registry, BuildOptions], StageBuilder | None]  # None when the options switch it off


CHAIN: tuple[Stage, ...] = (
    Stage("validate", "builders.validate:ValidateBuilder", ("structures", "references", "reference_sets"),
          "validated", False, _validate),
    Stage("screen", "builders.screen:ScreenBuilder", ("validated", "references", "reference_sets", "structures"),
          "screened", True, _screen),
    Stage("relax", "builders.relax:RelaxBuilder", ("validated", "screened"), "relaxed", True, _relax),
    Stage("refine", "builders.refine:RefineBuilder", ("relaxed", "references", "reference_sets", "structures"),
          "refined", True, _refine),
    Stage("predict", "builders.predict:PredictBuilder", ("relaxed", "refined"), "predicted", False, _predict),
    Stage("stability", "builders.stability:StabilityBuilder",
          ("predicted", "references", "reference_sets", "structures"), "stability", False, _stability),
    Stage("tunnels", "builders.tunnels:TunnelsBuilder", ("relaxed", "stability"), "tunnels", True, _tunnels),
    Stage("insertion", "builders.insertion:InsertionBuilder",
          ("tunnels", "relaxed", "stability", "references", "reference_sets", "structures"), "insertion", True,
          _insertion),
    Stage("dft", "builders.dft:DftBuilder", ("dft", "relaxed", "predicted", "stability", "references",
                                             "reference_sets", "structures"), "dft_comparison", False, _dft),
    Stage("rank", "builders.rank:RankBuilder", ("predicted", "validated", "relaxed", "stability", "tunnels",
                                                "dft_comparison", "insertion"), "candidates", False, _rank),
    Stage("funnel", "builders.funnel:FunnelBuilder", ("validated", "screened", "relaxed", "predicted", "stability",
                                                      "tunnels", "candidates"), "funnel", False, _funnel),
    Stage("optimade", "builders.optimade:OptimadeBuilder", ("structures", "validated", "relaxed", "predicted",
                                                            "stability", "tunnels", "insertion", "candidates",
                                                            "candidate_sets"), "optimade_structures", False, _optimade),
)
STAGES = tuple(s.name for s in CHAIN)
TARGETS = {s.name: s.target for s in CHAIN}
_BY_NAME = {s.name: s for s in CHAIN}


def make_builder(reg: Registry, stage: str, options: BuildOptions | None = None) -> StageBuilder | None:
    """The builder of one stage, or None when the options switch the stage off (e.g. no screen)."""
    if stage not in _BY_NAME:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    return _BY_NAME[stage].make(reg, options or BuildOptions())


def build(reg: Registry, stage: str = "all", options: BuildOptions | None = None, progress: bool = True,
          on_stage: Callable[[StageReport], None] | None = None,
          on_references: Callable[[LoadReport], None] | None = None) -> list[StageReport]:
    """Run one stage, or all of them in dependency order. With no reference set in the database, the shipped
    one is loaded first (`registry references load`): every hull and novelty verdict needs it."""
    options = options or BuildOptions()
    reg.ensure_indexes()
    loaded = ensure_references(reg)
    if loaded is not None and on_references:
        on_references(loaded)
    reports, counts = [], {}
    for name in STAGES if stage == "all" else (stage,):
        builder = make_builder(reg, name, options)
        if builder is None:
            continue
        builder.share_counts(counts)  # each collection counted once, and again after a stage wrote it
        workers = options.workers if _BY_NAME[name].parallel else 1
        report = run_builder(builder, name, workers=workers, progress=progress)
        reports.append(report)
        if on_stage:
            on_stage(report)
    return reports

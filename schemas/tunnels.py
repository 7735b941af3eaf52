"""The tunnels stage's document: open-channel geometry of a relaxed structure for each working ion."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from schemas.stage import StageDoc

# BVSE percolation energy (eV) above which no path counts as open, for any ion: the ceiling of the calibrated
# per-ion limits (registry/data/channels/thresholds.json, docs/channels.md). BVSE is a rigid-framework model whose
# percolation energies run above DFT (NEB) barriers; Rong et al. (Chem. Mater. 2015) put the practical NEB limit
# for multivalent cathodes at ~0.65-0.85 eV. Every labelled host of the library percolates at or below 0.87 eV
# except the two bronzes (TiO2(B) Li+ 1.51, VO2(B) Li+ 1.84, Zn2+ 2.11 eV: known misses). Anatase, with its
# correct oxygen (z = 0.208), has no 1-D channel: Mg2+ percolates in 3-D at 0.9-1.0 eV (E_1D = E_2D 0.92, E_3D 1.03).
MAX_BARRIER = 1.5
# BVlain's own command-line default; 0.2 changes the references' Mg2+ barriers by < 0.1 eV at twice the cost.
RESOLUTION = 0.25
# Barriers above this are reported as None (no percolation); also BVlain's bisection range.
ENCUT = 10.0
# Framework neighbours summed per grid point. BVlain's default is 100; 50 (about 5 Å in an oxide, where the
# screened Coulomb term is ~1e-3 of its contact value) moves the references' barriers by <= 0.03 eV at ~0.7x the
# time and half the memory.
NEIGHBOURS = 50


class SpeciesRadius(BaseModel):
    """One species of the structure and the hard-sphere radius Zeo++ was given for it."""

    species: str = Field(description="with its oxidation state, e.g. 'Mn4+' (a list, not a dict: '.' may occur)")
    sites: int
    radius: float | None = Field(None, description="Å; None when no Shannon radius applies")
    source: str | None = None


class FreeSpheres(BaseModel):
    """Zeo++ sphere diameters (Å) of one framework."""

    di: float = Field(description="largest included sphere")
    df: float = Field(description="largest free sphere: the widest sphere that can cross the cell")
    dif: float = Field(description="largest included sphere along the free-sphere path")


class ChannelAxis(BaseModel):
    """A lattice direction of the input cell along which a 1-D channel runs."""

    uvw: tuple[int, int, int] = Field(description="shortest lattice translation along the channel, input cell")
    label: Literal["a", "b", "c"] | None = Field(description="the lattice vector, when uvw is one of them")
    cartesian: tuple[float, float, float] = Field(description="unit vector, Cartesian frame of the input")
    repeat: float = Field(description="length of uvw (Å): the channel's repeat distance")


class IonLimits(BaseModel):
    """The calibrated thresholds one working ion is judged with (registry/data/channels/thresholds.json)."""

    group: str = Field(description="the calibration group: 'monovalent' or 'multivalent'")
    fraction: float = Field(description="least free-sphere diameter as a fraction of the ion's diameter 2 r")
    min_free_sphere: float = Field(description="Å: fraction x 2 r, the least Zeo++ Df that admits the ion")
    max_barrier: float = Field(description="eV: the highest BVSE percolation energy of an open path")


class IonChannel(BaseModel):
    """How one working ion moves through the framework left when its own element is taken out."""

    ion: str
    in_structure: bool = Field(description="the element was in the structure; the framework is without it")
    radius: float | None = Field(None, description="Shannon ionic radius (Å), smallest tabulated coordination")
    radius_coordination: str | None = None
    free_sphere: float | None = Field(None, description="Zeo++ Df (Å) of this ion's framework")
    limits: IonLimits | None = Field(None, description="the thresholds applied (None: an old report)")
    fits: bool | None = Field(None, description="free_sphere >= limits.min_free_sphere")
    e_1d: float | None = Field(None, description="BVSE percolation energy (eV) in 1-D; None above encut")
    e_2d: float | None = None
    e_3d: float | None = None
    dimensionality: int | None = Field(None, description="highest dimension percolating at <= limits.max_barrier")
    path_vector: tuple[int, int, int] | None = Field(None, description="uvw of the 1-D path, when dimensionality 1")
    admits: bool | None = Field(None, description="fits and dimensionality >= 1; None when undecided")
    error: str | None = None


class ChannelSettings(BaseModel):
    """The thresholds a report was computed with, so reports made with other settings are not mixed up."""

    max_barrier: float | None = Field(None, description="eV, one BVSE limit for every ion; None: each ion's "
                                                         "calibrated limit (IonChannel.limits)")
    calibration: str | None = Field(None, description="sha256 prefix of the thresholds file the limits came from")
    resolution: float = Field(description="BVSE grid spacing actually used (Å)")
    encut: float
    neighbours: int = NEIGHBOURS
    framework_coordination: str = "VI"


class ChannelReport(BaseModel):
    """Channel geometry of one structure for each working ion; dumps to JSON for MongoDB."""

    formula: str
    oxidation_state_source: Literal["input", "bv_analyzer", "composition_guess"] | None = None
    species: list[SpeciesRadius] = Field(default_factory=list)
    zeopp: FreeSpheres | None = Field(None, description="of the structure as given")
    zeopp_error: str | None = None
    ions: dict[str, IonChannel] = Field(default_factory=dict, description="keyed by element symbol")
    has_1d_channel: bool | None = Field(None, description="some working ion percolates in 1-D only")
    channel_axis: ChannelAxis | None = None
    settings: ChannelSettings
    error: str | None = Field(None, description="why nothing could be analysed")


class TunnelsDoc(StageDoc):
    formula_pretty: str
    chemsys: str
    has_1d_channel: bool | None = Field(description="Some working ion percolates in 1-D only")
    channel_axis: str | None = Field(description="a, b, c, or [u v w] of the relaxed cell")
    free_sphere: float | None = Field(description="Zeo++ largest free sphere Df (Å) of the structure as given")
    admits: dict[str, bool | None] = Field(description="Working ion -> whether an open channel admits it")
    dimensionality: dict[str, int | None] = Field(
        default_factory=dict, description="Working ion -> dimension of its open paths (1: a tunnel; 0: none)")
    report: ChannelReport

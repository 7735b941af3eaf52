"""DFT validation I/O: export of VASP inputs, reading results, linking them to registry structures.

No VASP here: results are ComputedStructureEntry JSON built from chosen numbers, and the two small vasprun.xml
files ASE ships with its tests (the vasprun path is otherwise covered only by pymatgen's own parser).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymatgen.io.vasp import Incar, Vasprun
from pymatgen.io.vasp.sets import MPRelaxSet

from registry.errors import RegistryError
from registry.io.dft import MANIFEST, export_inputs, ingest_results, select_for_export
from registry.io.ingest import Ingestor
from registry.io.records import Record
from registry.output.sets import create_set
from registry.science.references import elemental_energy
from schemas.structure import Origin

KNOWN_MNO2 = -1.80  # reference formation energy of the mined rutile MnO2, eV/atom (chosen)
MP_POTCARS = MPRelaxSet.CONFIG["POTCAR"]  # Mn -> Mn_pv, Mg -> Mg_pv, O -> O
MP_U = MPRelaxSet.CONFIG["INCAR"]["LDAUU"]["O"]  # U values MP uses in oxides (Mn: 3.9)
ASE_VASP = Path(pytest.importorskip("ase").__file__).parent / "test" / "testdata" / "vasp"


def fcc(a: float) -> Lattice:
    return Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])


def rutile(u: float = 0.305) -> Structure:
    return Structure(Lattice.tetragonal(4.40, 2.87), ["Mn", "Mn", "O", "O", "O", "O"],
                     [[0, 0, 0], [0.5, 0.5, 0.5], [u, u, 0], [1 - u, 1 - u, 0], [0.5 + u, 0.5 - u, 0.5],
                      [0.5 - u, 0.5 + u, 0.5]])


def fluorite() -> Structure:
    return Structure(fcc(4.8), ["Mn", "O", "O"], [[0, 0, 0], [0.25, 0.25, 0.25], [0.75, 0.75, 0.75]])


def rocksalt_mgo() -> Structure:
    return Structure(fcc(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def seed(reg) -> dict[str, str]:
    """A known rutile MnO2 (mined, reference E_form), and two generated candidates with ML values: fluorite
    MnO2 (passed the tunnel preset) and rock-salt MgO (did not). Returns name -> registry_id."""
    records = {
        "rutile": Record(Origin(kind="mined", source="test", source_id="rutile-MnO2"), rutile(),
                         {"formation_energy_per_atom": KNOWN_MNO2}),
        "fluorite": Record(Origin(kind="generated", source="test", source_id="fluorite-MnO2", run_id="r",
                                  generator="test"), fluorite()),
        "mgo": Record(Origin(kind="generated", source="test", source_id="rocksalt-MgO", run_id="r",
                             generator="test"), rocksalt_mgo()),
    }
    Ingestor(reg).write(records.values())
    reg.ensure_indexes()
    ids = {name: r.origin.registry_id() for name, r in records.items()}
    now = datetime.now(UTC)
    ml = {  # name: (ML E_form, ML E_hull, ML band gap, passed)
        "fluorite": (-1.70, 0.10, 0.5, True),
        "mgo": (-2.90, -2.90, 4.0, False),
    }
    for name, (e_form, e_hull, gap, passed) in ml.items():
        rid, structure = ids[name], records[name].structure
        common = {"registry_id": rid, "state": "successful", "formula_pretty": structure.composition.reduced_formula,
                  "chemsys": structure.composition.chemical_system, "last_updated": now}
        reg.collection("relaxed").insert_one({**common, "structure": structure.as_dict(),
                                              "potential": {"name": "CHGNet"}})
        reg.collection("predicted").insert_one({**common, "formation_energy_per_atom": e_form, "band_gap": gap})
        reg.collection("stability").insert_one({**common, "e_above_hull": e_hull})
        reg.collection("candidates").insert_one({"candidate_id": f"{rid}:tunnel:Mg", "registry_id": rid,
                                                 "preset": "tunnel", "ion": "Mg", "passed": passed, "score": 1.0,
                                                 "last_updated": now})
    return ids


def mp_entry(structure: Structure, correction_per_atom: float, e_form: float, data: dict | None = None,
             gga_u: bool = True, entry_id: str | None = None) -> ComputedStructureEntry:
    """An MP-style GGA(+U) entry whose MP2020-corrected formation energy will be `e_form`: its uncorrected
    energy is E_form + sum_i x_i mu_i (the MP elemental references) minus the correction MP2020 will add."""
    comp = structure.composition
    mu = sum(x * elemental_energy(el.symbol) for el, x in comp.fractional_composition.items())
    hubbards = {el.symbol: float(MP_U.get(el.symbol, 0)) for el in comp.elements} if gga_u else {}
    is_u = any(hubbards.values())
    return ComputedStructureEntry(
        structure, (e_form + mu - correction_per_atom) * comp.num_atoms, entry_id=entry_id, data=data or {},
        parameters={"run_type": "GGA+U" if is_u else "GGA", "is_hubbard": is_u, "hubbards": hubbards,
                    "potcar_symbols": [f"PAW_PBE {MP_POTCARS[el.symbol]} 06Sep2000" for el in comp.elements]})


def write_json(path: Path, entries: list[ComputedEntry] | ComputedEntry) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = [e.as_dict() for e in entries] if isinstance(entries, list) else entries.as_dict()
    path.write_text(json.dumps(payload))
    return path


def strained(structure: Structure, strain: float = 0.01) -> Structure:
    """What a DFT relaxation might return: the ML structure with a slightly different cell."""
    out = structure.copy()
    out.apply_strain(strain)
    return out


def export_candidates(reg, out: Path) -> dict:
    export_inputs(reg, select_for_export(reg), out)
    return json.loads((out / MANIFEST).read_text())


# ------------------------------------------------------------------------------------------- export


def test_export_writes_relax_and_static_inputs_and_a_manifest_without_potcars(registry, tmp_path):
    ids = seed(registry)
    manifest = export_candidates(registry, tmp_path / "out")
    [entry] = manifest["structures"]  # only the candidate that passed
    assert entry["registry_id"] == ids["fluorite"] and entry["structure_from"] == "relaxed"
    folder = tmp_path / "out" / entry["directory"]
    for run in ("relax", "static"):
        assert {"INCAR", "KPOINTS", "POSCAR"} <= {p.name for p in (folder / run).iterdir()}
        assert not (folder / run / "POTCAR").exists()
    relax, static = Incar.from_file(folder / "relax" / "INCAR"), Incar.from_file(folder / "static" / "INCAR")
    assert relax["NSW"] > 0 and static["NSW"] == 0
    assert relax["LDAU"] and entry["hubbard_u"] == {"Mn": MP_U["Mn"], "O": 0}
    assert entry["potcar_symbols"] == [MP_POTCARS["Mn"], MP_POTCARS["O"]] and entry["potcar_functional"] == "PBE"
    poscar = Structure.from_file(folder / "relax" / "POSCAR")
    assert StructureMatcher().fit(poscar, fluorite())
    assert entry["origin"]["source_id"] == "fluorite-MnO2" and len(entry["structure_content_hash"]) == 64


def test_export_from_structures_with_a_query(registry, tmp_path):
    ids = seed(registry)
    selection = select_for_export(registry, "structures", {"origin.kind": "mined"})
    assert [i.registry_id for i in selection.items] == [ids["rutile"]] and not selection.skipped
    report = export_inputs(registry, selection, tmp_path)
    assert report.written == [f"{ids['rutile']}_MnO2"]
    export_inputs(registry, select_for_export(registry), tmp_path, force=True)  # adds the candidate, merges
    manifest = json.loads((tmp_path / MANIFEST).read_text())
    assert {e["registry_id"] for e in manifest["structures"]} == {ids["rutile"], ids["fluorite"]}
    assert manifest["structures"][0]["selection"] == {"collection": "structures", "query": {"origin.kind": "mined"}}


def test_export_a_curated_set(registry, tmp_path):
    ids = seed(registry)
    create_set(registry, "shortlist", {}, preset="tunnel", ion="Mg")  # both candidates, passed or not
    selection = select_for_export(registry, set_name="shortlist")
    assert sorted(i.registry_id for i in selection.items) == sorted([ids["fluorite"], ids["mgo"]])
    assert selection.asked == {"set": "shortlist", "set_version": 1}
    with pytest.raises(RegistryError, match="no set named 'other'"):
        select_for_export(registry, set_name="other")


def test_export_refuses_a_non_empty_folder(registry, tmp_path):
    seed(registry)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(RegistryError, match="not empty"):
        export_inputs(registry, select_for_export(registry), tmp_path)


# ------------------------------------------------------------------------------------------- linking


def test_a_result_inside_an_exported_folder_is_linked_by_the_manifest(registry, tmp_path):
    ids = seed(registry)
    manifest = export_candidates(registry, tmp_path / "out")
    folder = tmp_path / "out" / manifest["structures"][0]["directory"]
    # a structure far from the ML one: only the manifest can tie it to the candidate
    write_json(folder / "static" / "entry.json", mp_entry(strained(fluorite(), 0.15), 0.0, -1.6))
    report = ingest_results(registry, [tmp_path / "out"])
    assert report.read == 1 and report.linked_by == {"manifest": 1}
    [doc] = registry.find(collection="dft")
    assert doc["registry_id"] == ids["fluorite"] and doc["link"]["method"] == "manifest"
    assert doc["calc_kind"] == "static"  # from the export folder it sat in


def test_a_registry_id_in_the_entry_data_links_it(registry, tmp_path):
    ids = seed(registry)
    write_json(tmp_path / "mgo.json", mp_entry(strained(rocksalt_mgo(), 0.2), 0.0, -3.0,
                                               data={"registry_id": ids["mgo"]}))
    ingest_results(registry, [tmp_path / "mgo.json"])
    [doc] = registry.find(collection="dft")
    assert doc["registry_id"] == ids["mgo"] and doc["link"]["method"] == "data"


def test_a_result_without_ids_is_linked_by_structure_match(registry, tmp_path):
    ids = seed(registry)
    write_json(tmp_path / "runs.json", [mp_entry(strained(fluorite()), 0.0, -1.6, entry_id="task-1"),
                                        mp_entry(strained(rutile()), 0.0, -1.8, entry_id="task-2")])
    ingest_results(registry, [tmp_path])
    docs = {d["source"]["entry_id"]: d for d in registry.find(collection="dft")}
    assert docs["task-1"]["registry_id"] == ids["fluorite"] and docs["task-2"]["registry_id"] == ids["rutile"]
    assert docs["task-1"]["link"]["method"] == "structure_match" and docs["task-1"]["link"]["rms"] < 0.1


def test_an_unlinkable_result_is_kept_with_the_reason(registry, tmp_path):
    seed(registry)
    cao = Structure(fcc(4.8), ["Ca", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    write_json(tmp_path / "cao.json", mp_entry(cao, 0.0, -3.0, data={"registry_id": "reg-does-not-exist"}))
    report = ingest_results(registry, [tmp_path])
    [doc] = registry.find(collection="dft")
    assert report.unlinked == 1 and doc["registry_id"] is None and doc["state"] == "successful"
    assert "not in this registry" in doc["link"]["reason"]
    assert "no registry structure of formula CaO" in doc["link"]["reason"]


# ------------------------------------------------------------------------------------------- reading


def test_a_vasprun_is_read_as_pymatgen_reads_it(registry, tmp_path):
    path = ASE_VASP / "vasprun_dfpt.xml"  # NaCl, PBE, from ASE's test data
    if not path.is_file():
        pytest.skip("ASE's test vasprun.xml is not installed")
    ingest_results(registry, [path])
    [doc] = registry.find(collection="dft")
    run = Vasprun(str(path), parse_potcar_file=False, parse_dos=False)
    assert doc["state"] == "successful" and doc["source"]["kind"] == "vasprun"
    assert doc["energy"] == pytest.approx(run.final_energy) and doc["formula_pretty"] == "NaCl"
    assert doc["band_gap"] == pytest.approx(run.eigenvalue_band_properties[0])
    assert doc["functional"] == "GGA" and doc["run_type"] == "PBE"  # GGA = PE: the PBE functional, named as MP does
    assert doc["calc_kind"] == "static" and doc["converged_electronic"] and doc["potcar_symbols"]
    assert doc["registry_id"] is None  # this registry has no NaCl


def test_unconverged_and_unreadable_runs_are_recorded_as_failed(registry, tmp_path):
    source = ASE_VASP / "vasprun_pstress.xml"  # 9 SCF steps in its final ionic step
    if not source.is_file():
        pytest.skip("ASE's test vasprun.xml is not installed")
    text = source.read_text()
    (tmp_path / "unconverged").mkdir()
    (tmp_path / "unconverged" / "vasprun.xml").write_text(re.sub(r'(name="NELM">)\s*\d+', r"\g<1>  3", text))
    (tmp_path / "killed").mkdir()
    (tmp_path / "killed" / "vasprun.xml").write_text(text[: len(text) // 2])
    report = ingest_results(registry, [tmp_path])
    assert report.read == 2 and report.failed == 2
    docs = {Path(d["source"]["path"]).parent.name: d for d in registry.find(collection="dft")}
    assert docs["unconverged"]["state"] == "failed" and "electronic SCF not converged" in docs["unconverged"]["error"]
    assert docs["unconverged"]["energy"] is not None  # read, kept for inspection, but never used as a result
    assert docs["killed"]["state"] == "failed" and docs["killed"]["error"].startswith("cannot parse vasprun.xml")


def test_task_documents_and_files_without_results(registry, tmp_path):
    ids = seed(registry)
    entry = mp_entry(strained(rocksalt_mgo()), 0.0, -3.0)
    plain = ComputedEntry(entry.composition, entry.uncorrected_energy, parameters=entry.parameters)
    task = {"task_id": "mp-task-7", "task_type": "Static", "state": "successful", "entry": plain.as_dict(),
            "output": {"structure": entry.structure.as_dict(), "bandgap": 4.4}}
    (tmp_path / "task.json").write_text(json.dumps(task))
    (tmp_path / "failed.json").write_text(json.dumps({**task, "task_id": "mp-task-8", "state": "failed"}))
    (tmp_path / "custodian.json").write_text(json.dumps([{"job": "vasp"}]))
    report = ingest_results(registry, [tmp_path])
    assert report.read == 2 and list(report.skipped) == [str(tmp_path / "custodian.json")]
    docs = {d["source"]["task_id"]: d for d in registry.find(collection="dft")}
    ok, failed = docs["mp-task-7"], docs["mp-task-8"]
    assert ok["registry_id"] == ids["mgo"] and ok["link"]["method"] == "structure_match"
    assert ok["band_gap"] == 4.4 and ok["calc_kind"] == "static" and ok["structure"] is not None
    assert failed["state"] == "failed" and "'failed'" in failed["error"]


def test_reingest_changes_nothing(registry, tmp_path):
    ids = seed(registry)
    write_json(tmp_path / "a.json", [mp_entry(strained(fluorite()), 0.0, -1.6, data={"registry_id": ids["fluorite"]}),
                                     mp_entry(rocksalt_mgo(), 0.0, -3.0)])
    first = ingest_results(registry, [tmp_path])
    before = {d["dft_id"]: d["last_updated"] for d in registry.find(collection="dft")}
    second = ingest_results(registry, [tmp_path])
    assert first.ingested == 2 and second.unchanged == 2 and second.ingested == second.updated == 0
    assert {d["dft_id"]: d["last_updated"] for d in registry.find(collection="dft")} == before


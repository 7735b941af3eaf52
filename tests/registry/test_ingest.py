import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pymatgen.core import Lattice, Structure
from pymatgen.entries.computed_entries import ComputedStructureEntry

from registry.io.ingest import Ingestor
from registry.io.readers import iter_inputs, read_path
from registry.io.records import Record
from schemas.structure import Origin


def ingest(registry, *paths):
    return Ingestor(registry).write(rec for inp in iter_inputs(map(Path, paths))
                                    for rec in read_path(inp.path, source=inp.dataset, name=inp.name))


def rocksalt(a: float = 4.21) -> Structure:
    return Structure(Lattice.cubic(a), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_every_mp20_row_is_ingested_or_rejected_and_a_second_ingest_changes_nothing(registry, shared_data):
    files = sorted((shared_data / "mp20_sample").glob("*.csv"))
    first = ingest(registry, *files)
    assert first.read == 1112
    assert first.ingested + first.rejected == 1112
    assert registry.count() == first.ingested
    assert registry.count(collection="rejects") == first.rejected
    stamps = {d["registry_id"]: d["last_updated"] for d in registry.find(fields=["registry_id", "last_updated"])}

    second = ingest(registry, *files)
    assert (second.ingested, second.updated, second.rejected) == (0, 0, first.rejected)
    assert second.unchanged == first.ingested
    assert registry.count() == first.ingested
    assert registry.count(collection="rejects") == first.rejected
    assert {d["registry_id"]: d["last_updated"] for d in registry.find(fields=["registry_id", "last_updated"])} == stamps


def test_reference_properties_are_kept_apart_from_predictions(registry, shared_data):
    ingest(registry, shared_data / "mp20_sample" / "test.csv")
    doc = registry.find({"origin.source_id": "mp-1002572"})[0]
    assert doc["formula_pretty"] == "LiMnO2"
    assert doc["origin"] == {**doc["origin"], "kind": "mined", "source": "test", "row": doc["origin"]["row"]}
    assert set(doc["reference"]) >= {"formation_energy_per_atom", "band_gap", "e_above_hull"}
    assert doc["symmetry"]["number"] > 0 and doc["elements"] == ["Li", "Mn", "O"]


def test_a_changed_record_is_updated_with_a_new_timestamp(registry, tmp_path):
    cif = tmp_path / "mgo.cif"
    cif.write_text(rocksalt(4.21).to(fmt="cif"))
    assert ingest(registry, cif).ingested == 1
    before = registry.find()[0]
    cif.write_text(rocksalt(4.30).to(fmt="cif"))
    report = ingest(registry, cif)
    assert (report.updated, report.ingested) == (1, 0)
    after = registry.find()[0]
    assert after["registry_id"] == before["registry_id"]
    assert after["last_updated"] > before["last_updated"]
    assert after["created_at"] == before["created_at"]
    assert after["volume"] == pytest.approx(4.30**3)


def test_a_folder_with_a_malformed_cif_ingests_the_good_files_and_records_the_bad_one(registry, shared_data, tmp_path):
    for cif in (shared_data / "tunnel_references").glob("*.cif"):
        (tmp_path / cif.name).write_text(cif.read_text())
    (tmp_path / "broken.cif").write_text("data_broken\n_cell_length_a 3.0\nloop_\n_atom_site_label\nFe1\n")
    report = ingest(registry, tmp_path)
    assert (report.read, report.ingested, report.rejected) == (5, 4, 1)
    reject = registry.find(collection="rejects")[0]
    assert reject["file"].endswith("broken.cif")
    assert "CIF" in reject["reason"] and reject["raw"].startswith("data_broken")


@pytest.mark.parametrize(
    ("structure", "reason"),
    [
        (Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0, 0, 0], [0.05, 0, 0]]), "closer than 0.5"),
        (Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0, 0, 0], [math.nan, 0.5, 0.5]]), "NaN"),
    ],
)
def test_unphysical_structures_become_rejects_with_a_reason(registry, structure, reason):
    origin = Origin(kind="mined", source="test", source_id="bad")
    good = Record(Origin(kind="mined", source="test", source_id="good"), rocksalt())
    report = Ingestor(registry).write([Record(origin, structure), good])
    assert (report.ingested, report.rejected) == (1, 1)
    assert reason in registry.find(collection="rejects")[0]["reason"]


def test_a_structure_with_no_sites_is_rejected(registry, tmp_path):
    empty = {**rocksalt().as_dict(), "sites": []}
    path = tmp_path / "empty.json"
    path.write_text(json.dumps(empty))
    report = ingest(registry, path)
    assert (report.ingested, report.rejected) == (0, 1)
    assert "site" in registry.find(collection="rejects")[0]["reason"]


def test_json_entries_keep_their_id_and_energies(registry, tmp_path):
    entry = ComputedStructureEntry(rocksalt(), energy=-12.6, entry_id="mp-1265", correction=-0.68)
    path = tmp_path / "entries.json"
    path.write_text(json.dumps([entry.as_dict(), rocksalt().as_dict(), {"not": "a structure"}]))
    report = ingest(registry, path)
    assert (report.ingested, report.rejected) == (2, 1)
    doc = registry.find({"origin.source_id": "mp-1265"})[0]
    assert doc["reference"]["uncorrected_energy_per_atom"] == pytest.approx(-6.3)
    assert doc["reference"]["energy"] == pytest.approx(-12.6 - 0.68)  # pymatgen's energy includes the correction
    assert doc["reference"]["correction"] == pytest.approx(-0.68)


def test_csv_rows_with_unparsable_cifs_are_rejected_and_the_rest_ingested(registry, tmp_path):
    good = rocksalt().to(fmt="cif").replace('"', "")
    path = tmp_path / "rows.csv"
    path.write_text(f'material_id,band_gap,cif\nm-1,nan,"{good}"\nm-2,1.0,"not a cif"\nm-3,2.5,"{good}"\n')
    report = ingest(registry, path)
    assert (report.ingested, report.rejected) == (2, 1)
    assert registry.find(collection="rejects")[0]["row"] == 1
    assert registry.find({"origin.source_id": "m-1"})[0]["reference"]["band_gap"] is None


def test_two_ingest_processes_at_once_leave_no_duplicates(db_uri, registry, shared_data):
    csv = shared_data / "mp20_sample" / "val.csv"
    cmd = [sys.executable, "-m", "cli", "--db", db_uri, "ingest", str(csv)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert registry.count() == 123
    assert len(registry.collection("structures").distinct("registry_id")) == 123


def test_registry_ids_are_stable_across_runs():
    origin = Origin(kind="mined", source="csv", source_id="mp-1")
    assert origin.registry_id() == Origin(kind="mined", source="csv", source_id="mp-1", row=7).registry_id()
    assert origin.registry_id() != Origin(kind="mined", source="cif", source_id="mp-1").registry_id()
    assert np.all([c in "0123456789abcdef" for c in origin.registry_id()[4:]])


def manganosite() -> Structure:
    return Structure(Lattice.cubic(4.44), ["Mn", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])


def test_files_of_one_name_in_two_folders_are_two_records(registry, tmp_path):
    for folder, structure in (("a", rocksalt()), ("b", manganosite())):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "sample.cif").write_text(structure.to(fmt="cif"))
    assert ingest(registry, tmp_path).ingested == 2
    found = {d["origin"]["source_id"]: d["formula_pretty"] for d in registry.find()}
    assert found == {"a/sample": "MgO", "b/sample": "MnO"}


def test_each_input_names_its_dataset_so_equal_names_from_two_datasets_stay_two_records(registry, tmp_path):
    """The default `origin.source` is the dataset: a lone CIF's folder, a CSV's stem (not the file type)."""
    for folder, structure in (("a", rocksalt()), ("b", manganosite())):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "sample.cif").write_text(structure.to(fmt="cif"))
        cif = structure.to(fmt="cif").replace('"', "")
        (tmp_path / f"{folder}.csv").write_text(f'material_id,cif\nm-1,"{cif}"\n')
    files = [tmp_path / "a" / "sample.cif", tmp_path / "b" / "sample.cif", tmp_path / "a.csv", tmp_path / "b.csv"]
    assert ingest(registry, *files).ingested == 4
    found = {(d["origin"]["source"], d["origin"]["source_id"]): d["formula_pretty"] for d in registry.find()}
    assert found == {("a", "sample"): "MgO", ("b", "sample"): "MnO", ("a", "m-1"): "MgO", ("b", "m-1"): "MnO"}


def test_another_input_under_the_same_id_is_kept_out_and_never_swapped_in(registry, tmp_path):
    """`x/data/sample.cif` and `y/data/sample.cif` (both of dataset `data`) share an id: the first stays, the second
    is a reject that says why and what to do, in the same run or a later one; its own --source ingests it."""
    from click.testing import CliRunner

    from cli.main import cli

    paths = []
    for folder, structure in (("x", rocksalt()), ("y", manganosite())):
        (tmp_path / folder / "data").mkdir(parents=True)
        paths.append(tmp_path / folder / "data" / "sample.cif")
        paths[-1].write_text(structure.to(fmt="cif"))
    run = CliRunner().invoke(cli, ["--db", registry.uri, "ingest", *map(str, paths)], catch_exceptions=False)
    assert "ingested 1, updated 0, unchanged 0, rejected 1" in run.stdout
    assert "same id, another input" in run.stdout
    assert ingest(registry, paths[1]).rejected == 1
    [doc] = registry.find()
    assert doc["formula_pretty"] == "MgO" and doc["origin"]["source"] == "data"
    [reject] = registry.find(collection="rejects")
    assert "--source" in reject["reason"] and reject["file"] == str(paths[1])
    both = CliRunner().invoke(cli, ["--db", registry.uri, "ingest", str(paths[1]), "--source", "y"])
    assert "ingested 1" in both.stdout
    assert sorted(d["formula_pretty"] for d in registry.find()) == ["MgO", "MnO"]


def test_two_csvs_of_one_dataset_with_one_material_id_do_not_overwrite_each_other(registry, tmp_path):
    for folder, structure in (("one", rocksalt()), ("two", manganosite())):
        cif = structure.to(fmt="cif").replace('"', "")
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "rows.csv").write_text(f'material_id,cif\nm-1,"{cif}"\n')
    first, second = ingest(registry, tmp_path / "one" / "rows.csv"), ingest(registry, tmp_path / "two" / "rows.csv")
    assert (first.ingested, second.ingested, second.rejected) == (1, 0, 1)
    assert [d["formula_pretty"] for d in registry.find()] == ["MgO"]


@pytest.mark.parametrize("change", [{"reference.e_above_hull": -9.99}, {"structure.lattice.matrix.0.0": 9.0},
                                    {"origin.source_id": "other"}])
def test_a_document_changed_in_the_database_is_written_again_by_the_next_ingest(registry, tmp_path, change):
    """Re-ingest checks what is stored, not only the stored content hash (which a hand edit leaves as it was)."""
    path = tmp_path / "rows.csv"
    path.write_text(f'material_id,e_above_hull,cif\nm-1,0.05,"{rocksalt().to(fmt="cif").replace(chr(34), "")}"\n')
    ingest(registry, path)
    before = registry.find(fields=["reference", "structure", "origin"])
    registry.collection("structures").update_one({}, {"$set": change})
    report = ingest(registry, path)
    assert (report.updated, report.repaired, report.unchanged) == (1, 1, 0)
    assert registry.find(fields=["reference", "structure", "origin"]) == before
    assert ingest(registry, path).unchanged == 1

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
from registry.io.readers import iter_input_files, read_path
from registry.io.records import Record
from schemas.structure import Origin


def ingest(registry, *paths):
    return Ingestor(registry).write(rec for p in iter_input_files(map(Path, paths)) for rec in read_path(p))


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
    assert doc["origin"] == {**doc["origin"], "kind": "mined", "source": "csv", "row": doc["origin"]["row"]}
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

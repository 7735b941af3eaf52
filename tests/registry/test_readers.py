from types import SimpleNamespace

from pymatgen.core import Lattice, Structure

from registry.io.readers import MAX_FILE_BYTES, read_mp_api, read_path


class StandInMPRester:
    """Stands in for mp_api.client.MPRester (this machine has no internet): same call, same document shape."""

    def __init__(self, docs):
        self.calls = []
        self.materials = SimpleNamespace(summary=SimpleNamespace(search=self._search))
        self._docs = docs

    def _search(self, **kwargs):
        self.calls.append(kwargs)
        return self._docs


def test_mp_api_documents_map_to_mined_records_with_reference_values():
    mgo = Structure(Lattice.cubic(4.21), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    docs = [SimpleNamespace(material_id="mp-1265", structure=mgo, formation_energy_per_atom=-3.05, band_gap=4.45,
                            energy_above_hull=0.0, formula_pretty="MgO", theoretical=False),
            {"material_id": "mp-2", "structure": None}]
    client = StandInMPRester(docs)
    records = list(read_mp_api(client, elements=["Mg", "O"]))
    assert client.calls[0]["elements"] == ["Mg", "O"] and "structure" in client.calls[0]["fields"]
    assert records[0].origin.source == "mp-api" and records[0].origin.source_id == "mp-1265"
    assert records[0].reference == {"formation_energy_per_atom": -3.05, "band_gap": 4.45, "e_above_hull": 0.0,
                                    "theoretical": False}
    assert records[1].structure is None and "no structure" in records[1].reason


def test_unknown_file_types_are_one_reject(tmp_path):
    path = tmp_path / "data.xyz"
    path.write_text("1\n\nH 0 0 0\n")
    [record] = read_path(path)
    assert record.structure is None and "unknown input type .xyz" in record.reason


def test_oversized_files_are_refused_without_reading_them(tmp_path):
    path = tmp_path / "huge.cif"
    with open(path, "wb") as fh:
        fh.truncate(MAX_FILE_BYTES + 1)  # sparse: no real disk used
    [record] = read_path(path)
    assert record.structure is None and "limit" in record.reason


def test_a_csv_without_a_cif_column_is_one_reject(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("a,b\n1,2\n")
    [record] = read_path(path)
    assert "no 'cif' column" in record.reason


def test_json_never_imports_arbitrary_modules(tmp_path):
    path = tmp_path / "evil.json"
    path.write_text('{"@module": "os", "@class": "system", "command": "touch pwned"}')
    [record] = read_path(path)
    assert record.structure is None
    assert not (tmp_path / "pwned").exists()

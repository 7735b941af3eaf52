"""Hostile input to every parser: each input ends as a structure (or document) or as a reject with a reason.

No exception escapes but the parser's own documented one, nothing runs longer than `HANG_S`, and sizes are
bounded before the costly work: a 10^6-atom cell, a 1 GB file (sparse: no disk is used), a bundle that inflates
to 1 GB. Property-based with hypothesis (derandomized, so CI sees the same examples every run).
"""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import tarfile
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymatgen.core import Lattice, Structure

from generators.cdvae import ARRAY_KEYS, CDVAESamples
from generators.crystal_text import CrystalTextError, text_to_structure
from registry.errors import RegistryError
from registry.io.dft import DftResult, NoResults, read_results
from registry.io.readers import MAX_FILE_BYTES, MAX_REJECTS_PER_FILE, parse_cif, read_path
from registry.io.records import Record
from registry.output.bundle import BundleError, Limits, export_set, import_bundle, read_bundle, safe_name
from registry.output.sets import create_set
from tests.reliability.harness import ROOT

HANG_S = 20  # a parse of one hostile input that takes longer than this is a hang
FUZZ = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
CIFS = sorted((ROOT / "registry" / "data" / "sample" / "tunnel_references").glob("*.cif"))


@contextmanager
def within(seconds: float = HANG_S) -> Iterator[None]:
    """Fail as a hang if the block runs longer than `seconds` (SIGALRM: the tests run in the main thread)."""
    def hang(signum, frame):
        raise TimeoutError(f"no result within {seconds} s: a hang")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def assert_structure_or_reason(records: list[Record]) -> None:
    for record in records:
        if record.structure is None:
            assert record.reason and record.reason.strip(), record
            assert len(record.reason) < 2000, "a reason should be a line or two, not the input"
        else:
            assert isinstance(record.structure, Structure)


def read_file(name: str, content: bytes | str) -> list[Record]:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / name
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        with within():
            return list(read_path(path))


# --- strategies: mutations of real inputs, and numbers a parser must survive ---

NASTY_NUMBERS = st.sampled_from(["nan", "inf", "-inf", "1e308", "1e-320", "-0", "0", "1e999", "0x10", "1_000",
                                 "?", ".", "-", "9" * 400, "3.5(2)", "-1", "180", "1e5"])


@st.composite
def mutated_text(draw: st.DrawFn, text: str) -> str:
    """A real input with lines dropped, doubled or swapped, and numbers replaced by nasty ones."""
    lines = text.splitlines()
    for _ in range(draw(st.integers(1, 6))):
        i = draw(st.integers(0, len(lines) - 1))
        action = draw(st.sampled_from(["drop", "double", "swap", "number", "garbage"]))
        if action == "drop" and len(lines) > 1:
            lines.pop(i)
        elif action == "double":
            lines.insert(i, lines[i])
        elif action == "swap":
            j = draw(st.integers(0, len(lines) - 1))
            lines[i], lines[j] = lines[j], lines[i]
        elif action == "number":
            words = lines[i].split()
            if words:
                words[draw(st.integers(0, len(words) - 1))] = draw(NASTY_NUMBERS)
                lines[i] = " ".join(words)
        else:
            lines[i] = draw(st.text(max_size=40))
    return "\n".join(lines)


def real_cif() -> st.SearchStrategy[str]:
    return st.sampled_from([p.read_text() for p in CIFS])


JSON = st.recursive(st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
                    lambda children: st.lists(children, max_size=4) | st.dictionaries(
                        st.sampled_from(["@module", "@class", "sites", "lattice", "species", "abc", "xyz", "label",
                                         "structure", "energy", "matrix", "properties", "x"]) | st.text(max_size=8),
                        children, max_size=5), max_leaves=30)


# --- CIF, CSV, JSON through the readers ---

@FUZZ
@given(st.text(max_size=3000) | real_cif().flatmap(mutated_text))
def test_any_cif_text_is_structures_or_a_value_error_with_a_reason(text):
    with within():
        try:
            structures = parse_cif(text)
        except ValueError as exc:
            assert str(exc) and len(str(exc)) < 2000
        else:
            assert structures and all(isinstance(s, Structure) for s in structures)


@FUZZ
@given(real_cif().flatmap(mutated_text), st.sampled_from(["cif", "csv", "json"]))
def test_any_file_becomes_records_with_structures_or_reasons(cif, kind):
    if kind == "cif":
        content = cif
    elif kind == "csv":
        content = "material_id,formation_energy_per_atom,cif\nx-1,-1.5," + json.dumps(cif) + "\nx-2,nan,\n"
    else:
        content = json.dumps({"cif": cif})  # not a structure: a reject, with the reason
    assert_structure_or_reason(read_file(f"input.{kind}", content))


@FUZZ
@given(st.binary(max_size=2000), st.sampled_from([".cif", ".csv", ".json", ".json.gz"]))
def test_any_bytes_in_any_input_file_are_records_not_a_crash(data, suffix):
    records = read_file(f"input{suffix}", data)
    assert records and all(r.structure is None for r in records if not data)
    assert_structure_or_reason(records)


@FUZZ
@given(JSON)
def test_any_json_document_is_records_with_reasons(document):
    assert_structure_or_reason(read_file("input.json", json.dumps(document)))


@FUZZ
@given(st.data())
def test_a_structure_json_with_nasty_values_is_a_structure_or_a_reason(data):
    d = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).as_dict()
    for _ in range(data.draw(st.integers(1, 3))):
        where = data.draw(st.sampled_from(["lattice", "site", "species", "occu"]))
        value = float(data.draw(NASTY_NUMBERS.filter(lambda s: _is_float(s))))
        if where == "lattice":
            d["lattice"]["matrix"][data.draw(st.integers(0, 2))][data.draw(st.integers(0, 2))] = value
        elif where == "site":
            d["sites"][data.draw(st.integers(0, 1))]["abc"][data.draw(st.integers(0, 2))] = value
        elif where == "species":
            d["sites"][0]["species"][0]["element"] = data.draw(st.sampled_from(["Xx", "", "D", "Og", "mg"]))
        else:
            d["sites"][1]["species"][0]["occu"] = value
    assert_structure_or_reason(read_file("input.json", json.dumps(d, allow_nan=True)))


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def test_deeply_nested_json_is_a_reject():
    [record] = read_file("deep.json", "[" * 100_000 + "]" * 100_000)
    assert record.structure is None and "recursion" in record.reason


# --- the LLM's crystal text (random and mutated text: tests/generators/test_crystal_text.py) ---

@pytest.mark.parametrize(("lengths", "angles"), [
    ("1000.0 1000.0 1000.0", "1 1 1.5"),  # a needle of a cell: nearly flat, every image close
    ("1e5 1e5 1e5", "90 90 90"),
    ("0.6 0.6 0.6", "60 60 60"),
    ("500.0 0.6 500.0", "90 0.01 90"),
])
def test_extreme_cells_in_llm_text_end_quickly(lengths, angles):
    text = f"{lengths}\n{angles}\nMg\n0.00 0.00 0.00\nO\n0.50 0.50 0.50"
    with within(10):
        try:
            text_to_structure(text)
        except CrystalTextError as exc:
            assert str(exc)


# --- CDVAE sampler arrays ---

ARRAYS = st.fixed_dictionaries({
    key: st.tuples(st.lists(st.integers(0, 4), min_size=0, max_size=3),
                   st.sampled_from([np.float32, np.float64, np.int64, np.int8, np.uint8, np.bool_]))
    for key in ARRAY_KEYS
})


@FUZZ
@given(ARRAYS, st.integers(0, 2**32 - 1))
def test_any_npz_of_arrays_is_samples_or_a_value_error(spec, seed):
    rng = np.random.default_rng(seed)
    arrays = {k: (rng.normal(size=shape) * rng.choice([1, 1e3, 1e308])).astype(dtype)
              for k, (shape, dtype) in spec.items()}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "samples.npz"
        np.savez(path, **arrays)
        with within():
            try:
                records = list(CDVAESamples(path).generate("run"))
            except ValueError as exc:
                assert str(exc)
            else:
                assert_structure_or_reason(records)


def test_a_cdvae_sample_of_a_million_atoms_is_rejected_before_it_is_built(tmp_path):
    n = 10**6
    arrays = {"frac_coords": np.zeros((n, 3), np.float32), "atom_types": np.full(n, 8, np.int64),
              "lengths": np.full((1, 3), 100.0), "angles": np.full((1, 3), 90.0), "num_atoms": np.array([n])}
    np.savez_compressed(tmp_path / "big.npz", **arrays)
    with within(30):
        [record] = list(CDVAESamples(tmp_path / "big.npz").generate("run"))
    assert record.structure is None and "more than the limit" in record.reason


def test_a_cdvae_zip_bomb_is_refused_before_it_is_inflated(tmp_path):
    n = 300 * 2**20 // 12  # 300 MB of zeros, a few hundred kB compressed
    np.savez_compressed(tmp_path / "bomb.npz", frac_coords=np.zeros((n, 3), np.float32))
    assert (tmp_path / "bomb.npz").stat().st_size < 2 * 2**20
    with within(10), pytest.raises(ValueError, match="inflate"):
        CDVAESamples(tmp_path / "bomb.npz")


# --- one gigabyte, a million atoms: refused before the costly work ---

@pytest.mark.parametrize("name", ["big.cif", "big.csv", "big.json", "big.json.gz"])
def test_a_1_gb_input_file_is_refused_unread(tmp_path, name):
    path = tmp_path / name
    with open(path, "wb") as fh:
        fh.truncate(2**30)  # sparse: no disk used
    start = time.monotonic()
    [record] = list(read_path(path))
    assert time.monotonic() - start < 2
    assert record.structure is None and f"over the {MAX_FILE_BYTES // 2**20} MiB limit" in record.reason


@pytest.mark.parametrize("name", ["vasprun.xml", "entries.json", "samples.npz", "eval_gen.pt"])
def test_a_1_gb_result_or_sampler_file_is_refused_unread(tmp_path, name):
    path = tmp_path / name
    with open(path, "wb") as fh:
        fh.truncate(2**30)
    start = time.monotonic()
    if name.endswith((".npz", ".pt")):
        with pytest.raises(ValueError, match="MiB limit"):
            CDVAESamples(path)
    else:
        [result] = read_results(path)
        assert "MiB limit" in result.error
    assert time.monotonic() - start < 2


def test_a_cif_of_a_million_atoms_is_refused_in_about_a_second():
    rows = "\n".join(f"Mg{i} Mg 0.{i:06d} 0.5 0.5" for i in range(10**6))
    cif = ("data_big\n_cell_length_a 1000\n_cell_length_b 1000\n_cell_length_c 1000\n_cell_angle_alpha 90\n"
           "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'P 1'\nloop_\n_atom_site_label\n"
           f"_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n{rows}\n")
    with within(5), pytest.raises(ValueError, match="lines, more than"):
        parse_cif(cif)


def test_a_cif_whose_symmetry_multiplies_a_few_atoms_into_thousands_is_refused():
    """25 general positions in Fm-3m would be 4,800 sites: pymatgen's site merging would take minutes."""
    rng = np.random.default_rng(0)
    rows = "\n".join(f"Mg{i} Mg {x:.4f} {y:.4f} {z:.4f}" for i, (x, y, z) in enumerate(rng.uniform(0.02, 0.23, (25, 3))))
    cif = ("data_symmetry_bomb\n_cell_length_a 40\n_cell_length_b 40\n_cell_length_c 40\n_cell_angle_alpha 90\n"
           "_cell_angle_beta 90\n_cell_angle_gamma 90\n_symmetry_space_group_name_H-M 'F m -3 m'\nloop_\n"
           f"_atom_site_label\n_atom_site_type_symbol\n_atom_site_fract_x\n_atom_site_fract_y\n_atom_site_fract_z\n"
           f"{rows}\n")
    with within(5), pytest.raises(ValueError, match="symmetry operations"):
        parse_cif(cif)


def test_a_json_structure_of_a_million_sites_is_refused_before_pymatgen_builds_it(tmp_path):
    site = json.dumps({"species": [{"element": "Mg", "occu": 1}], "abc": [0, 0, 0], "label": "Mg"})
    doc = f'{{"lattice": {{"matrix": [[90, 0, 0], [0, 90, 0], [0, 0, 90]]}}, "sites": [{",".join([site] * 10**6)}]}}'
    with within(60):
        [record] = read_file("big.json", doc)
    assert record.structure is None and "1000000 sites, more than the limit" in record.reason


# --- DFT outputs ---

@FUZZ
@given(JSON)
def test_any_dft_json_is_results_or_no_results(document):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "results.json"
        path.write_text(json.dumps(document))
        with within():
            try:
                results = read_results(path)
            except NoResults as exc:
                assert str(exc)
            else:
                assert all(isinstance(r, DftResult) and (r.entry is not None or r.error) for r in results)


@FUZZ
@given(st.binary(max_size=3000) | st.text(max_size=3000).map(str.encode) | st.builds(
    lambda cut: b'<?xml version="1.0"?>\n<modeling><generator><i name="program">vasp</i>'[:cut],
    st.integers(0, 70)))
def test_any_vasprun_bytes_are_a_failed_result_with_a_reason(data):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "vasprun.xml"
        path.write_bytes(data)
        with within():
            [result] = read_results(path)
    assert result.entry is None and result.error


# --- bundles ---

@pytest.fixture(scope="module")
def bundle(seeded_registry, tmp_path_factory) -> Path:
    reg, _ = seeded_registry
    create_set(reg, "fuzz", {}, top=3)
    out = tmp_path_factory.mktemp("bundle") / "fuzz.tar.gz"
    export_set(reg, "fuzz", out)
    reg.collection("candidate_sets").drop()
    return out


@FUZZ
@given(st.data())
def test_a_damaged_bundle_is_refused_and_nothing_is_written(bundle, registry, data):
    """Bit flips past the gzip header (whose time and OS bytes nobody checks) or a cut anywhere: refused, or,
    where the damage missed every byte that matters, imported exactly as the intact bundle would be."""
    raw = bytearray(bundle.read_bytes())
    if data.draw(st.booleans()):
        for _ in range(data.draw(st.integers(1, 8))):
            raw[data.draw(st.integers(10, len(raw) - 1))] ^= data.draw(st.integers(1, 255))
    else:
        raw = raw[: data.draw(st.integers(0, len(raw) - 1))]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "damaged.tar.gz"
        path.write_bytes(bytes(raw))
        try:
            with within():
                report = import_bundle(registry, path)
        except BundleError as exc:
            assert str(exc)
            assert registry.client[registry.database].list_collection_names() == []
        else:
            assert report.set_name == "fuzz" and report.n_written > 0 and not report.conflicts
            registry.client.drop_database(registry.database)


@FUZZ
@given(st.lists(st.sampled_from(["..", ".", "", "/", "a", "\\", "C:", "\x00", "~", "..."]), min_size=1, max_size=5))
def test_a_file_name_leading_outside_the_bundle_is_refused(parts):
    name = "/".join(parts)
    try:
        safe = safe_name(name)
    except BundleError:
        return
    resolved = (Path("/bundle") / safe).resolve()
    assert resolved == Path("/bundle") or Path("/bundle") in resolved.parents


def test_a_bundle_inflating_to_1_gb_is_refused_after_reading_only_its_headers(tmp_path):
    path = tmp_path / "bomb.tar.gz"
    with gzip.open(path, "wb", compresslevel=1) as gz, tarfile.open(fileobj=gz, mode="w|") as tar:
        info = tarfile.TarInfo("bomb/cif/zeros.cif")
        info.size = 2**30

        class Zeros(io.RawIOBase):
            left = 2**30

            def readable(self) -> bool:
                return True

            def readinto(self, buffer):
                n = min(len(buffer), self.left)
                buffer[:n] = bytes(n)
                self.left -= n
                return n

        tar.addfile(info, io.BufferedReader(Zeros(), 2**20))
    assert path.stat().st_size < 8 * 2**20
    start = time.monotonic()
    with pytest.raises(BundleError, match="allowed per file"):
        read_bundle(path, Limits())
    assert time.monotonic() - start < 2


# --- error paths of one input: bounded, and never more than the input's own reject ---

def _vasprun_json(filename: str) -> str:
    return json.dumps({"@module": "pymatgen.io.vasp.outputs", "@class": "Vasprun", "filename": filename})


def test_json_naming_a_class_that_opens_files_is_refused_without_opening_them(tmp_path):
    """Vasprun opens the file its JSON names: a FIFO would hang the ingest, and the reject must not tell whether
    a path exists."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    reasons = []
    for target in (fifo, Path("/etc/shadow"), tmp_path / "absent"):
        path = tmp_path / f"run-{target.name}.json"
        path.write_text(_vasprun_json(str(target)))
        with within(10):
            [record] = read_path(path)
        assert record.structure is None and "refused" in record.reason
        reasons.append(record.reason.replace(str(target), "PATH"))
    assert len(set(reasons)) == 1


def test_rejects_per_file_are_capped_with_one_summary(tmp_path):
    """A 1 KB .json.gz of zeros expands to many items: 100 rejects, then one that counts the rest; a structure
    among them is still read."""
    items = [0] * 5000 + [Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]).as_dict()]
    path = tmp_path / "zeros.json.gz"
    path.write_bytes(gzip.compress(json.dumps(items).encode()))
    assert path.stat().st_size < 2000
    records = list(read_path(path))
    assert sum(r.structure is not None for r in records) == 1
    rejects = [r for r in records if r.structure is None]
    assert len(rejects) == MAX_REJECTS_PER_FILE + 1 and rejects[-1].reason.startswith("4900 more rejects")


def test_one_bad_byte_in_a_csv_rejects_its_row_only(tmp_path):
    cif = Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]).to(fmt="cif").replace('"', "")
    path = tmp_path / "rows.csv"
    path.write_bytes(f'material_id,cif\nm-1,"{cif}"\nm-2\xff,"{cif}"\nm-3,"{cif}"\n'.encode("latin-1"))
    records = list(read_path(path))
    assert [r.structure is not None for r in records] == [True, False, True]
    assert "not UTF-8" in records[1].reason and records[1].origin.row == 1


def test_an_explicit_file_of_an_unknown_type_is_one_reject_and_the_good_files_are_written(db_uri, tmp_path):
    from click.testing import CliRunner

    from cli.main import cli

    (tmp_path / "model.pkl").write_bytes(b"\x80\x04K\x01.")
    (tmp_path / "mgo.cif").write_text(Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]).to(fmt="cif"))
    result = CliRunner().invoke(cli, ["--db", db_uri, "ingest", str(tmp_path / "model.pkl"), str(tmp_path / "mgo.cif")])
    assert result.exit_code == 0, result.output
    assert "ingested 1, updated 0, unchanged 0, rejected 1" in result.output and "unknown input type .pkl" in result.output


def test_a_structure_document_without_origin_fails_alone_in_validate(db_uri, references):
    """(`references`: a small reference set, so that the build does not load the shipped one first.)"""
    from click.testing import CliRunner

    from cli.main import cli
    from registry.db.client import Registry

    run = lambda *args: CliRunner().invoke(cli, ["--db", db_uri, *args])  # noqa: E731
    assert run("ingest", str(ROOT / "registry" / "data" / "sample" / "tunnel_references")).exit_code == 0
    reg = Registry(db_uri)
    damaged = reg.find(fields=["registry_id"], sort=[("registry_id", 1)])[0]["registry_id"]
    reg.collection("structures").update_one({"registry_id": damaged}, {"$unset": {"origin": ""}})
    result = run("build", "validate", "--top", "0")
    assert result.exit_code == 0, result.output
    docs = {d["registry_id"]: d for d in reg.find(collection="validated")}
    assert docs[damaged]["state"] == "failed" and "origin" in docs[damaged]["error"]
    assert sum(d["state"] != "failed" for d in docs.values()) == 3


def _rewrite(bundle: Path, folder: Path, change) -> Path:
    """The bundle's files, changed by `change(files)` (name -> bytes, in order), packed again as a .tar.gz."""
    files: list[tuple[str, bytes]] = []
    with tarfile.open(bundle, "r:gz") as tar:
        files = [(m.name, tar.extractfile(m).read()) for m in tar if m.isfile()]
    files = change(files)
    out = folder / "changed.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return out


def test_a_bundle_naming_one_file_twice_is_refused(bundle, registry, tmp_path):
    def twice(files):
        name, data = next((n, d) for n, d in files if "/documents/" in n)
        return [*files, (name, data.replace(b"registry_id", b"registry_iX"))]

    with pytest.raises(BundleError, match="twice"):
        import_bundle(registry, _rewrite(bundle, tmp_path, twice))
    assert registry.client[registry.database].list_collection_names() == []


def test_a_bundle_whose_set_is_invalid_writes_nothing(bundle, registry, tmp_path):
    """The set is checked with everything else, before the first write (it used to be saved last)."""
    def top_zero(files):
        out = []
        for name, data in files:
            if name.endswith("manifest.json"):
                manifest = json.loads(data)
                manifest["set"]["top"] = 0
                data = json.dumps(manifest).encode()
            out.append((name, data))
        return out

    with pytest.raises(RegistryError, match="set 'fuzz' is not valid.*top"):
        import_bundle(registry, _rewrite(bundle, tmp_path, top_zero))
    db = registry.client[registry.database]
    assert sum(db[name].estimated_document_count() for name in db.list_collection_names()) == 0

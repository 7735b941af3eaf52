import hashlib
import io
import json
import os
import tarfile

import pytest

from registry.db.stores import COLLECTIONS
from registry.output.bundle import BUNDLED, BundleError, Limits, export_set, import_bundle, read_bundle
from registry.output.sets import add_members, create_set, get_set, members


@pytest.fixture
def shared(seeded):
    """A set of four candidates, one with a note, in the seeded registry."""
    source, ids = seeded
    create_set(source, "mg-shortlist", {"values.e_above_hull": {"$lt": 1.0}}, top=4,
               description="for the Mg cathode meeting", author="ana")
    add_members(source, "mg-shortlist", [ids["beta-FeOOH"]], note="hollandite: widest channel")
    return source, [m.registry_id for m in members(get_set(source, "mg-shortlist"))]


def stage_documents(reg, ids) -> dict[str, list[dict]]:
    """Every stage document of these members, as stored, without what marks where it lives."""
    out = {}
    for collection in BUNDLED:
        key = COLLECTIONS[collection].key
        out[collection] = [{k: v for k, v in d.items() if k not in ("_id", "imported_from")}
                           for d in reg.find({"registry_id": {"$in": ids}}, collection=collection,
                                             sort=[(key, 1)])]
    return out


def everything(reg) -> dict[str, list[dict]]:
    db = reg.client[reg.database]
    return {name: list(db[name].find({}, sort=[("_id", 1)])) for name in db.list_collection_names()}


def untouched(reg) -> bool:
    return not any(everything(reg).values())


def test_export_then_import_into_a_fresh_registry_reproduces_every_document(shared, registry, tmp_path):
    source, ids = shared
    report = export_set(source, "mg-shortlist", tmp_path / "out" / "mg.tar.gz")
    assert report.members == 5 and report.version == 2
    imported = import_bundle(registry, tmp_path / "out" / "mg.tar.gz")
    assert imported.set_status == "created" and not imported.conflicts
    assert imported.written == {c: 5 for c in BUNDLED}

    assert stage_documents(registry, ids) == stage_documents(source, ids)  # provenance and timestamps too
    [doc] = registry.find({"registry_id": ids[0]}, collection="relaxed")
    assert doc["imported_from"]["bundle"] == "mg.tar.gz"
    assert doc["imported_from"]["manifest_sha256"] == imported.manifest_sha256 == report.manifest_sha256
    assert doc["provenance"]["builder"] == "relax"

    copy = get_set(registry, "mg-shortlist")
    assert [v.change for v in copy.versions] == ["import"] and copy.imported_from["set_version"] == 2
    assert copy.filter == {"values.e_above_hull": {"$lt": 1.0}} and copy.author == "ana"
    assert [m.values() for m in members(copy)] == [m.values() for m in members(get_set(source, "mg-shortlist"))]
    assert members(copy)[-1].note == "hollandite: widest channel"


def test_importing_twice_writes_nothing(shared, registry, tmp_path):
    source, _ = shared
    export_set(source, "mg-shortlist", tmp_path / "mg")
    import_bundle(registry, tmp_path / "mg")
    before = everything(registry)
    again = import_bundle(registry, tmp_path / "mg")
    assert again.n_written == 0 and again.set_status == "unchanged"
    assert sum(again.unchanged.values()) == 35
    assert everything(registry) == before


def test_a_local_document_that_differs_is_kept_unless_replace(shared, registry, tmp_path):
    source, ids = shared
    export_set(source, "mg-shortlist", tmp_path / "mg")
    import_bundle(registry, tmp_path / "mg")
    registry.collection("predicted").update_one({"registry_id": ids[0]}, {"$set": {"band_gap": 9.0}})
    kept = import_bundle(registry, tmp_path / "mg")
    assert kept.conflicts == [f"predicted/{ids[0]}"] and kept.n_written == 0
    assert registry.find({"registry_id": ids[0]}, collection="predicted")[0]["band_gap"] == 9.0
    replaced = import_bundle(registry, tmp_path / "mg", replace=True)
    assert replaced.written == {"predicted": 1}
    assert registry.find({"registry_id": ids[0]}, collection="predicted")[0]["band_gap"] != 9.0


def test_a_set_name_taken_by_another_set_is_refused_before_writing(shared, registry, tmp_path):
    source, _ = shared
    export_set(source, "mg-shortlist", tmp_path / "mg")
    create_set(registry, "mg-shortlist")  # this registry has no candidates: an empty set of that name
    before = everything(registry)
    with pytest.raises(BundleError, match="other members exists here"):
        import_bundle(registry, tmp_path / "mg")
    assert everything(registry) == before
    assert import_bundle(registry, tmp_path / "mg", set_name="mg-shortlist-2").set_status == "created"


def test_optimade_export_is_a_valid_structures_response(shared, tmp_path):
    from optimade.models import StructureResponseMany

    source, ids = shared
    export_set(source, "mg-shortlist", tmp_path / "mg.json", fmt="optimade")
    response = StructureResponseMany.model_validate_json((tmp_path / "mg.json").read_text())
    assert [r.id for r in response.data] == ids
    first = response.data[0].attributes.model_dump()
    assert first["nsites"] == len(first["cartesian_site_positions"]) and first["_tmo_passed"] is True
    assert response.meta.provider.prefix == "tmo"


# --- Damaged and hostile bundles: each is refused with its reason, and nothing is written ---

def repack(src, dst, change, **tar_kwargs) -> None:
    """Rewrite a .tar.gz with `change(files)` applied (a trusted reader: the test's own archive)."""
    with tarfile.open(src, "r:gz") as tar:
        files = {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}
    files = change(files)
    with tarfile.open(dst, "w:gz", **tar_kwargs) as tar:
        for name, data in files.items():
            if isinstance(data, tarfile.TarInfo):
                tar.addfile(data)
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _manifest_name(files):
    return next(n for n in files if n.endswith("manifest.json"))


def _tamper(files):
    name = next(n for n in files if "/documents/" in n)
    files[name] = files[name].replace(b'"steps": 3', b'"steps": 4', 1)  # same size, other content
    return files


def _wrong_checksum(files):
    m = _manifest_name(files)
    manifest = json.loads(files[m])
    manifest["files"][0]["sha256"] = "0" * 64
    files[m] = json.dumps(manifest).encode()
    return files


def _foreign_documents(files):
    """A JSON file that is not a registry document, with a manifest that vouches for it."""
    name = next(n for n in files if "/documents/" in n)
    rid = name.rsplit("/", 1)[1].removesuffix(".json")
    files[name] = json.dumps({"registry_id": rid, "documents": {"predicted": [
        {"registry_id": rid, "state": "successful", "band_gap": "small"}]}}).encode()
    m = _manifest_name(files)
    manifest = json.loads(files[m])
    for entry in manifest["files"]:
        if name.endswith(entry["path"]):
            entry["sha256"], entry["bytes"] = hashlib.sha256(files[name]).hexdigest(), len(files[name])
    files[m] = json.dumps(manifest).encode()
    return files


def _foreign_manifest(files):
    files[_manifest_name(files)] = json.dumps({"name": "some other tool", "version": 3}).encode()
    return files


def _extra_file(files):
    files[_manifest_name(files).replace("manifest.json", "cif/extra.cif")] = b"data_x\n"
    return files


def _traversal(files):
    files["../escaped.json"] = b"{}"
    return files


def _absolute(files):
    files["/etc/registry.json"] = b"{}"
    return files


def _symlink(files):
    link = tarfile.TarInfo(_manifest_name(files).replace("manifest.json", "cif/link.cif"))
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    files[link.name] = link
    return files


def _traversal_in_manifest(files):
    m = _manifest_name(files)
    manifest = json.loads(files[m])
    manifest["files"][0]["path"] = "../../outside.cif"
    files[m] = json.dumps(manifest).encode()
    return files


def _pax_bomb(files):
    m = _manifest_name(files)
    info = tarfile.TarInfo(m.replace("manifest.json", "notes.txt"))
    info.pax_headers = {"comment": "x" * 3_000_000}
    files[info.name] = info
    return files


DAMAGE = {
    "tampered file": (_tamper, {}, "checksum mismatch"),
    "wrong checksum": (_wrong_checksum, {}, "checksum mismatch"),
    "foreign documents": (_foreign_documents, {}, "does not match the PredictedDoc schema"),
    "foreign manifest": (_foreign_manifest, {}, "not a tmo-registry-set-bundle manifest"),
    "unlisted file": (_extra_file, {}, "not listed in the manifest"),
    "path traversal": (_traversal, {}, "leading outside the bundle"),
    "absolute path": (_absolute, {}, "absolute or leading outside"),
    "symlink": (_symlink, {}, "a link; bundles hold regular files only"),
    "traversal in manifest": (_traversal_in_manifest, {}, "leading outside the bundle"),
    "pax header bomb": (_pax_bomb, {"format": tarfile.PAX_FORMAT}, "inflates beyond the files it declares"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_bundle_is_refused_and_nothing_is_written(shared, registry, tmp_path, damage):
    source, _ = shared
    export_set(source, "mg-shortlist", tmp_path / "mg.tar.gz")
    change, tar_kwargs, reason = DAMAGE[damage]
    repack(tmp_path / "mg.tar.gz", tmp_path / "bad.tar.gz", change, **tar_kwargs)
    with pytest.raises(BundleError, match=reason):
        import_bundle(registry, tmp_path / "bad.tar.gz")
    assert untouched(registry)


def test_a_truncated_archive_is_refused(shared, registry, tmp_path):
    source, _ = shared
    export_set(source, "mg-shortlist", tmp_path / "mg.tar.gz")
    data = (tmp_path / "mg.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(BundleError, match="not a readable .tar.gz"):
        import_bundle(registry, tmp_path / "cut.tar.gz")
    assert untouched(registry)


def test_oversized_and_too_many_files_are_refused_before_reading(shared, registry, tmp_path):
    source, _ = shared
    export_set(source, "mg-shortlist", tmp_path / "mg.tar.gz")
    zeros = tmp_path / "bomb.tar.gz"  # 50 MB of zeros: about 50 kB compressed
    repack(tmp_path / "mg.tar.gz", zeros, lambda files: {**files, "mg/cif/zeros.cif": bytes(50 * 2**20)})
    assert zeros.stat().st_size < 2**20
    with pytest.raises(BundleError, match="more than the 20971520 allowed per file"):
        import_bundle(registry, zeros)
    with pytest.raises(BundleError, match="more than 100000 bytes in all"):
        read_bundle(tmp_path / "mg.tar.gz", Limits(max_total_bytes=100_000))
    with pytest.raises(BundleError, match="more than 3 files"):
        read_bundle(tmp_path / "mg.tar.gz", Limits(max_files=3))
    assert untouched(registry)


def test_a_folder_bundle_with_a_link_or_a_changed_file_is_refused(shared, registry, tmp_path):
    source, ids = shared
    export_set(source, "mg-shortlist", tmp_path / "mg")
    os.symlink("/etc/hostname", tmp_path / "mg" / "cif" / "link.cif")
    with pytest.raises(BundleError, match="a link"):
        import_bundle(registry, tmp_path / "mg")
    os.unlink(tmp_path / "mg" / "cif" / "link.cif")
    cif = tmp_path / "mg" / "cif" / f"{ids[0]}.cif"
    cif.write_text(cif.read_text()[:-20])
    with pytest.raises(BundleError, match="the manifest says .* \\(truncated\\?\\)"):
        import_bundle(registry, tmp_path / "mg")
    assert untouched(registry)

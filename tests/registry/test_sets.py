
import pytest

from registry.db.client import Registry
from registry.errors import RegistryError
from registry.output.sets import add_members, create_set, delete_set, diff_versions, get_set, list_sets, members, remove_members

# --- Candidate sets ---

def test_a_set_is_made_from_a_query_best_first(seeded):
    registry, ids = seeded
    s = create_set(registry, "mg-hosts", {"values.e_above_hull": {"$lt": 0.5}}, top=3, description="first cut",
                   author="ana")
    assert s.version == 1 and s.author == "ana" and s.filter == {"values.e_above_hull": {"$lt": 0.5}}
    ranked = registry.find({"preset": "tunnel", "ion": "Mg", "values.e_above_hull": {"$lt": 0.5}},
                           collection="candidates", sort=[("passed", -1), ("score", -1)], limit=3)
    got = members(s)
    assert [m.registry_id for m in got] == [d["registry_id"] for d in ranked]
    first = got[0]
    assert first.passed and first.score == ranked[0]["score"]
    assert first.e_above_hull == ranked[0]["values"]["e_above_hull"]
    assert first.admits is ranked[0]["values"]["admits"]["Mg"] and first.free_sphere is not None


def test_every_change_is_a_version_and_old_versions_stay_readable(seeded):
    registry, ids = seeded
    create_set(registry, "short", {"passed": True})
    v1 = {m.registry_id for m in members(get_set(registry, "short"))}
    assert v1 == {ids["VO2"], ids["TiVO4"]}

    add_members(registry, "short", [ids["CrO2"], ids["beta-FeOOH"]], note="channel too narrow for Mg?",
                author="ben")
    remove_members(registry, "short", [ids["VO2"]])
    add_members(registry, "short", [ids["CrO2"]], note="re-checked: Df 1.0 Å")
    s = get_set(registry, "short")
    assert s.version == 4 and [v.change for v in s.versions] == ["create", "add", "remove", "note"]
    assert {m.registry_id for m in members(s, 1)} == v1
    assert {m.registry_id for m in members(s)} == {ids["TiVO4"], ids["CrO2"], ids["beta-FeOOH"]}

    d = diff_versions(registry, "short", 1, 4)
    assert [m.registry_id for m in d.added] == [ids["CrO2"], ids["beta-FeOOH"]]
    assert [m.registry_id for m in d.removed] == [ids["VO2"]]
    assert not d.changed
    notes = diff_versions(registry, "short", 3, 4).changed
    assert [(c.registry_id, c.field, c.old, c.new) for c in notes] == [
        (ids["CrO2"], "note", "channel too narrow for Mg?", "re-checked: Df 1.0 Å")]
    assert [s.name for s in list_sets(registry)] == ["short"]


@pytest.mark.parametrize("action, message", [
    (lambda reg, ids: create_set(reg, "short"), "already exists"),
    (lambda reg, ids: add_members(reg, "short", ["reg-0000000000000000"]), "not in the registry"),
    (lambda reg, ids: add_members(reg, "short", [ids["VO2"]]), "already in set"),
    (lambda reg, ids: remove_members(reg, "short", [ids["CrO2"]]), "not in set"),
    (lambda reg, ids: members(get_set(reg, "short"), 7), "no version 7"),
    (lambda reg, ids: diff_versions(reg, "nope", 1, 2), "no set named 'nope'"),
    (lambda reg, ids: create_set(reg, "../x"), "bad set name"),
    (lambda reg, ids: create_set(reg, "other", preset="nope"), "unknown preset"),
])
def test_mistakes_are_clear_errors_and_change_nothing(seeded, action, message):
    registry, ids = seeded
    create_set(registry, "short", {"passed": True})
    with pytest.raises(RegistryError, match=message):
        action(registry, ids)
    assert [(s.name, s.version) for s in list_sets(registry)] == [("short", 1)]


def test_an_unranked_structure_is_named_as_such(seeded):
    registry, ids = seeded
    create_set(registry, "short", {"passed": True})
    [invalid] = registry.find({"valid": False}, collection="validated")
    with pytest.raises(RegistryError, match="not ranked under preset 'tunnel' for Mg"):
        add_members(registry, "short", [invalid["registry_id"]])


def test_sets_of_two_registries_stay_apart(seeded, registry):
    seeded_registry, ids = seeded
    create_set(seeded_registry, "short", {"passed": True})
    assert list_sets(registry) == []
    with pytest.raises(RegistryError, match="no set named"):
        get_set(registry, "short")


def test_the_seed_has_what_the_other_tests_rely_on(seeded):
    """Guards the fixture: two passing candidates, one blocked channel, a failed relaxation, an invalid structure."""
    registry, ids = seeded
    passed = {d["registry_id"] for d in registry.find({"passed": True}, collection="candidates")}
    assert passed == {ids["VO2"], ids["TiVO4"]}
    assert registry.count({"state": "failed"}, collection="relaxed") == 1
    assert registry.count({"valid": False}, collection="validated") == 1
    assert registry.count(collection="candidates") == 7


def test_sets_live_in_the_registry_database_even_when_the_uri_names_another(registry, server):
    named_elsewhere = Registry(f"{server.uri}not_this_one", database=registry.database)
    create_set(named_elsewhere, "empty")
    assert registry.count(collection="candidate_sets") == 1
    assert "not_this_one" not in registry.client.list_database_names()


def test_creating_a_set_again_with_the_same_definition_refreshes_it(seeded):
    registry, ids = seeded
    first = create_set(registry, "again", {"passed": True}, top=2)
    same = create_set(registry, "again", {"passed": True}, top=2)
    assert same.version == first.version == 1  # nothing changed: no new version
    coll = registry.collection("candidates")
    outsider = coll.find_one({"registry_id": {"$nin": [m.registry_id for m in first.versions[-1].members]},
                              "preset": "tunnel", "ion": "Mg"})
    coll.update_one({"_id": outsider["_id"]}, {"$set": {"passed": True, "score": 1e6}})
    try:
        refreshed = create_set(registry, "again", {"passed": True}, top=2)
    finally:
        coll.replace_one({"_id": outsider["_id"]}, outsider)
    assert refreshed.version == 2 and refreshed.versions[-1].change == "refresh"
    assert refreshed.versions[-1].members[0].registry_id == outsider["registry_id"]
    assert refreshed.versions[-1].added == [outsider["registry_id"]]


def test_a_deleted_set_is_gone_with_its_versions(seeded):
    registry, ids = seeded
    create_set(registry, "gone", {"passed": True})
    add_members(registry, "gone", [ids["CrO2"]])
    assert delete_set(registry, "gone") == 2
    with pytest.raises(RegistryError, match="no set named 'gone'"):
        get_set(registry, "gone")

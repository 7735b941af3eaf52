"""Store helpers against the real embedded server."""

from registry.db.stores import among


def test_among_narrows_a_scope_to_some_keys_with_the_key_first(registry):
    registry.ensure_indexes(["validated"])
    registry.collection("validated").insert_many([{"registry_id": f"r{i}", "state": state}
                                                  for i, state in enumerate(["successful", "failed", "successful"])])
    query = among("registry_id", ["r0", "r1"], {"state": "successful"})
    assert next(iter(query)) == "registry_id"  # the embedded server serves a filter by its first indexed field
    assert [d["registry_id"] for d in registry.find(query, collection="validated")] == ["r0"]
    # a scope with its own condition on the key: both hold
    both = among("registry_id", ["r0", "r1"], {"registry_id": {"$ne": "r0"}})
    assert [d["registry_id"] for d in registry.find(both, collection="validated")] == ["r1"]
    assert among("registry_id", iter(["r2"])) == {"registry_id": {"$in": ["r2"]}}

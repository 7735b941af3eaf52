"""`Registry`: the Python entry point. Resolves the database once and hands out stores and collections on it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import cached_property
from pathlib import Path
from typing import Any

from pymongo import ASCENDING, MongoClient
from pymongo.collection import Collection as MongoCollection
from pymongo.errors import PyMongoError

from registry.db.config import Settings, check_uri, database_name, redact
from registry.db.server import EmbeddedServer
from registry.db.stores import COLLECTIONS, IN_CHUNK, RANKED, RegistryStore, among, make_store
from registry.errors import DatabaseUnavailable, RegistryError


class Registry:
    """One registry database.

    >>> reg = Registry()                      # REGISTRY_DB, else the embedded server under ./.registry
    >>> reg.count({"elements": "O"})          # structures containing oxygen
    >>> reg.find({"chemsys": "Mn-O"}, fields=["registry_id", "formula_pretty"])
    >>> store = reg.store("relaxed")          # a maggma MongoStore, e.g. for builders

    Credentials and TLS options (see `registry.db.config`) go to every MongoClient it makes, stores included; on an
    embedded server started with `--auth`, the admin user from its credentials file is used unless the
    environment names a user. Writes are retryable: pymongo resends a write once after a network error or a
    retryable server error, under the same transaction number so the server applies it once.
    """

    def __init__(self, uri: str | None = None, *, home: str | Path | None = None, database: str | None = None,
                 settings: Settings | None = None):
        self.settings = settings or Settings.resolve(db=uri, home=home, database=database)
        self._client_options: dict[str, Any] = {"serverSelectionTimeoutMS": self.settings.timeout_ms,
                                                "retryWrites": True, **self.settings.client_options()}
        if self.settings.db_uri:
            check_uri(self.settings.db_uri)
            self.uri = self.settings.db_uri
        else:
            server = EmbeddedServer(self.settings.home)
            state = server.ensure_running()
            self.uri = state.uri
            if state.auth and "username" not in self._client_options and (admin := server.credentials("admin")):
                self._client_options.update(username=admin.username, password=admin.password)
        if "servermonitoringmode=" not in self.uri.lower():
            # SecantusDB answers the streaming monitor's awaitable hello only after maxAwaitTimeMS (10 s), so a
            # server marked unknown by a retryable error ("shutting down", "not primary") is found again only after
            # the selection timeout and the retry fails; polling finds it again in 0.5 s.
            self._client_options["serverMonitoringMode"] = "poll"
        self.database = database_name(self.uri, self.settings.database)

    def __repr__(self) -> str:
        return f"Registry({redact(self.uri)!r}, database={self.database!r})"

    def client_options(self) -> dict[str, Any]:
        """What every MongoClient on this registry needs beyond the URI (timeouts, retryable writes, credentials,
        TLS): for clients made elsewhere, e.g. mongoengine's."""
        return dict(self._client_options)

    @cached_property
    def client(self) -> MongoClient:
        return MongoClient(self.uri, tz_aware=True, **self._client_options)

    def ping(self) -> None:
        """Fail fast with one clear message when the database is not there."""
        try:
            self.client.admin.command("ping")
        except PyMongoError as exc:
            raise DatabaseUnavailable(f"cannot reach the database at {redact(self.uri)}: {_short(exc)}") from None

    def collection(self, name: str) -> MongoCollection:
        return self.client[self.database][name]

    def store(self, name: str, **kwargs: Any) -> RegistryStore:
        """A maggma store on a registry collection (not yet connected: builders connect and close their own)."""
        kwargs["mongoclient_kwargs"] = {**self._client_options, **kwargs.get("mongoclient_kwargs", {})}
        return make_store(self.uri, self.database, name, timeout_ms=self.settings.timeout_ms, **kwargs)

    def ensure_indexes(self, names: Iterable[str] | None = None) -> None:
        """Create the catalogue's indexes; idempotent. Upserts without the key index scan the whole collection."""
        for name in names or COLLECTIONS:
            spec = COLLECTIONS[name]
            coll = self.collection(name)
            coll.create_index([(spec.key, ASCENDING)], unique=True)
            for field in spec.indexes:
                coll.create_index([(field, ASCENDING)])

    def find(self, filter: Mapping[str, Any] | None = None, collection: str = "structures",
             fields: list[str] | None = None, sort: list[tuple[str, int]] | None = None,
             limit: int = 0, max_time_ms: int | None = None) -> list[dict[str, Any]]:
        """`max_time_ms`: the server stops the query after this long (a user's query: `settings.query_timeout_ms`;
        with `registry.db.guard.check_filter`, one user cannot hold the server)."""
        if not 0 <= limit < 2**63:  # BSON's int64: a larger one ends in pymongo's OverflowError
            raise RegistryError(f"limit {limit} is out of range (0 for all, else at most {2**63 - 1})")
        projection = {f: 1 for f in fields} if fields else None
        if projection is not None and "_id" not in projection:
            projection["_id"] = 0
        cursor = self.collection(collection).find(dict(filter or {}), projection, max_time_ms=max_time_ms)
        if sort:
            cursor = cursor.sort(sort)
        return list(cursor.limit(limit))

    def find_among(self, field: str, values: Iterable[Any], collection: str = "structures",
                   fields: list[str] | None = None, scope: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
        """The documents whose `field` is one of `values` (within `scope`), read `IN_CHUNK` keys per query: the
        embedded server's cost of one `$in` grows faster than its number of keys."""
        values = list(dict.fromkeys(values))
        return [d for i in range(0, len(values), IN_CHUNK)
                for d in self.find(among(field, values[i:i + IN_CHUNK], scope), collection, fields)]

    def top_candidates(self, preset: str, ion: str, n: int = 10, fields: list[str] | None = None) -> list[dict[str, Any]]:
        """The best `n` candidates of a preset and working ion, best first: the ranks 1..n that the rank stage
        writes for its best `RANKED`, read as indexed equalities (the embedded server sorts in memory, and answers
        a range on an index, `{"rank": {"$lte": 10}}`, in 250 ms at 10,000 candidates against 3 ms for the ten
        equalities; bench/load.py). Beyond `RANKED` a sort by score, done in memory by the embedded server."""
        if n > RANKED:
            return self.find({"preset": preset, "ion": ion}, collection="candidates", fields=fields,
                             sort=[("passed", -1), ("score", -1), ("candidate_id", 1)], limit=n)
        rows = self.find_among("rank", range(1, n + 1), "candidates", [*fields, "rank"] if fields else None,
                               scope={"preset": preset, "ion": ion})
        return sorted(rows, key=lambda d: d["rank"])

    def count(self, filter: Mapping[str, Any] | None = None, collection: str = "structures",
              max_time_ms: int | None = None) -> int:
        options = {"maxTimeMS": max_time_ms} if max_time_ms else {}
        return self.collection(collection).count_documents(dict(filter or {}), **options)

    def stats(self) -> dict[str, Any]:
        """Counts per collection, and for structures per origin kind and source."""
        db = self.client[self.database]
        names = set(db.list_collection_names())
        counts = {name: db[name].estimated_document_count() for name in COLLECTIONS if name in names}
        by_origin = list(db["structures"].aggregate([
            {"$group": {"_id": {"kind": "$origin.kind", "source": "$origin.source"}, "n": {"$sum": 1}}},
            {"$sort": {"_id.kind": 1, "_id.source": 1}},
        ])) if "structures" in names else []
        return {
            "database": self.database,
            "collections": counts,
            "structures_by_origin": [{"kind": g["_id"].get("kind"), "source": g["_id"].get("source"), "count": g["n"]}
                                     for g in by_origin],
        }


def _short(exc: Exception) -> str:
    """pymongo's topology dumps are long; keep the first sentence."""
    text = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]
    return redact(text)[:300]

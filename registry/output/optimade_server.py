"""`registry serve`: optimade-python-tools' own server (FastAPI, its MongoDB backend) on the registry's database.

Configured here, for this registry, whatever ~/.optimade.json or OPTIMADE_* variables say about the same
settings (they still set the rest, e.g. OPTIMADE_PAGE_LIMIT):

- read-only: no test data inserted, no index made; on an embedded server that requires authentication, as its
  read-only user (registry db start --auth);
- /structures serves the optimade stage's collection (builders/optimade.py), its successful documents only: a
  structure the stage could not map is a failed envelope, not an entry; /references and /links serve empty
  collections of their own (the registry's `references` are hull entries, not bibliographic references);
- through the registry's own MongoClient: its credentials, TLS and timeouts, and tz-aware dates, so
  `last_modified` is served in UTC;
- the provider `tmo` with the `_tmo_` properties described in /info/structures, and the registry's name and
  version as the implementation in every response's meta.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import uvicorn
from fastapi import FastAPI
from optimade.models import DataType, Implementation, StructureResource
from optimade.server.config import ServerConfig
from optimade.server.create_app import create_app
from optimade.server.entry_collections import mongo
from optimade.server.mappers import StructureMapper
from pymongo import MongoClient

from registry import __version__
from registry.db.server import EmbeddedServer
from registry.output.optimade import PROVIDER_NAME, provider
from schemas.optimade import PREFIX, OptimadeStructureDoc

if TYPE_CHECKING:
    from registry.db.client import Registry

STRUCTURES = "optimade_structures"
REFERENCES = "optimade_references"
LINKS = "optimade_links"
SERVED = {"state": "successful"}
FAILED = {"state": "failed"}


def provider_fields() -> list[dict[str, Any]]:
    """The `_tmo_` properties of the stage's schema, with their OPTIMADE type, unit and description."""
    out = []
    for name, spec in OptimadeStructureDoc.model_json_schema(by_alias=True)["properties"].items():
        if not name.startswith(f"_{PREFIX}_"):
            continue
        json_type = next(t["type"] for t in spec.get("anyOf", [spec]) if t.get("type") != "null")
        field = {"name": name, "type": DataType.from_json_type(json_type).value, "description": spec["description"]}
        if "x-optimade-unit" in spec:
            field["unit"] = spec["x-optimade-unit"]
        out.append(field)
    return out


def reader_client(reg: Registry) -> MongoClient:
    """The registry's client options, as the embedded server's read-only user where it has one and the
    environment names no user."""
    options = reg.client_options()
    if reg.settings.db_uri is None and reg.settings.username is None:
        server = EmbeddedServer(reg.settings.home)
        state = server.status()
        if state is not None and state.auth and (reader := server.credentials("reader")) is not None:
            options.update(username=reader.username, password=reader.password)
    return MongoClient(reg.uri, tz_aware=True, **options)


def _without_database(uri: str) -> str:
    """optimade 1.5.0's ServerConfig recurses without end on a URI naming a database: the database goes apart."""
    parts = urlsplit(uri)
    return urlunsplit((parts.scheme, parts.netloc, "/", parts.query, parts.fragment))


def server_config(reg: Registry, base_url: str | None = None) -> ServerConfig:
    """optimade-python-tools' settings for this registry (the module's docstring says which and why)."""
    return ServerConfig(
        database_backend="mongodb", mongo_uri=_without_database(reg.uri), mongo_database=reg.database,
        structures_collection=STRUCTURES, references_collection=REFERENCES, links_collection=LINKS,
        insert_test_data=False, create_default_index=False, base_url=base_url,
        provider=provider(), implementation=Implementation(name=PROVIDER_NAME, version=__version__),
        provider_fields={"structures": provider_fields()},
        aliases={"structures": {"last_modified": "last_updated"}},  # the stage's time of the last content change
    )


class ServedStructures(mongo.MongoCollection):
    """The view's successful documents only. The condition goes last in the filter, never in an `$and`: the
    embedded SecantusDB serves a filter through its first indexed field, and an `$and` through none."""

    def __len__(self) -> int:  # `data_available` of every response; failed documents are few and indexed
        return self.collection.estimated_document_count() - self.collection.count_documents(FAILED)

    def handle_query_params(self, params: Any) -> dict[str, Any]:
        criteria = super().handle_query_params(params)
        criteria["filter"] = {**criteria["filter"], **SERVED}  # no OPTIMADE filter names `state`
        return criteria


def create_server(reg: Registry, base_url: str | None = None) -> FastAPI:
    """The OPTIMADE API of this registry, as an ASGI app."""
    config = server_config(reg, base_url)
    # optimade keeps one MongoClient per (backend, URI) and would make its own from the URI alone
    mongo._CLIENTS[(config.database_backend.value, config.mongo_uri)] = reader_client(reg)
    app = create_app(config)
    app.state.entry_collections["structures"] = ServedStructures(
        name=STRUCTURES, resource_cls=StructureResource, resource_mapper=StructureMapper(config), config=config)
    return app


def serve(reg: Registry, host: str = "127.0.0.1", port: int = 5000, base_url: str | None = None) -> None:
    """Serve until interrupted (Ctrl-C ends it after the requests in flight)."""
    uvicorn.run(create_server(reg, base_url), host=host, port=port, log_level="info")

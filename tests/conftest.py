"""Tests run against a real SecantusDB server (MongoDB wire protocol, WiredTiger storage), never mongomock.

One server per test session; each test gets its own database on it, dropped afterwards.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.client import Registry
from registry.server import EmbeddedServer, ServerState
from tests.seeded import seeded, seeded_registry  # noqa: F401  (fixtures shared by sets, bundle, report tests)

SHARED = Path(os.environ.get("REGISTRY_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"shared data not found at {SHARED} (set REGISTRY_SHARED_DATA)")
    return SHARED


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerState]:
    embedded = EmbeddedServer(tmp_path_factory.mktemp("registry-home"))
    state = embedded.ensure_running()
    yield state
    embedded.stop()


@pytest.fixture
def db_uri(server: ServerState) -> Iterator[str]:
    """A URI naming a fresh database on the session's server."""
    name = f"test_{uuid.uuid4().hex[:10]}"
    yield f"{server.uri}{name}"
    Registry(server.uri).client.drop_database(name)


@pytest.fixture
def registry(db_uri: str) -> Registry:
    return Registry(db_uri)

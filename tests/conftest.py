"""Tests run against a real SecantusDB server (MongoDB wire protocol, WiredTiger storage), never mongomock.

One server per test session; each test gets its own database on it, dropped afterwards.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from registry.db.client import Registry
from registry.db.server import EmbeddedServer, ServerState
from tests.known import load_references
from tests.paths import SHIPPED, shared_root
from tests.seeded import seeded, seeded_registry  # noqa: F401  (fixtures shared by sets, bundle, report tests)


@pytest.fixture(scope="session")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """../shared/data, or a stand-in made of the copies shipped in the repository."""
    found = shared_root()
    if found is not None:
        return found
    stand_in = tmp_path_factory.mktemp("shared-data")
    for name, target in SHIPPED.items():
        (stand_in / name).symlink_to(target, target_is_directory=True)
    return stand_in


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerState]:
    embedded = EmbeddedServer(tmp_path_factory.mktemp("registry-home"))
    state = embedded.ensure_running(auth=False)
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


@pytest.fixture
def references(registry: Registry) -> Registry:
    """`registry` with the MP reference set of the Mg-Mn-O system loaded."""
    load_references(registry)
    return registry


@pytest.fixture(scope="module")
def one_torch_thread():
    """For modules of small CHGNet graphs: on a busy machine two torch threads run them 10-30x slower than one."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)

"""Inputs, references and servers shared by the reliability tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from registry.io.records import Record
from tests.reliability.harness import (
    VALIDATE,
    Daemon,
    Reference,
    cli_env,
    fresh,
    mp20_records,
    snapshot,
    start_daemon,
    timed_run,
    tiny_chain_records,
)


@pytest.fixture(scope="session")
def tiny_chain() -> list[Record]:
    return tiny_chain_records()


@pytest.fixture(scope="session")
def mp20_150() -> list[Record]:
    return mp20_records(150)


@pytest.fixture(scope="session")
def validate_reference(server, mp20_150) -> Iterator[Reference]:
    """An uninterrupted `registry build validate` of `mp20_150`: its final state and the stage's duration."""
    reg = fresh(server.uri, mp20_150)
    code, durations = timed_run(("--db", reg.uri, "build", "validate", "--top", "0"), cli_env())
    assert code == 0
    yield Reference(reg, snapshot(reg, VALIDATE), durations)
    reg.client.drop_database(reg.database)


@pytest.fixture(scope="module")
def failpoint_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """A SecantusDB server with `configureFailPoint` enabled: never the session's server, whose clients a
    failpoint would reach too."""
    daemon = start_daemon(tmp_path_factory.mktemp("failpoints") / "db", "--enable-test-commands")
    yield daemon
    daemon.stop()

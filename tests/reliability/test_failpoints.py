"""The database drops connections or fails commands mid-stage (SecantusDB's `failCommand` failpoint, as mongod's).

What pymongo can retry safely (a single-document or bulk single-document write whose connection dropped: it is
resent with the same transaction number, which the server deduplicates) is retried without the user noticing.
Anything else stops the stage with one error line and exit code 2, leaves only complete documents, and a re-run
completes the stage exactly as an uninterrupted run would.
"""

from __future__ import annotations

import uuid

import pymongo
import pytest
from click.testing import CliRunner
from pymongo import monitoring

from cli.main import cli
from registry.db.client import Registry
from registry.io.ingest import Ingestor
from tests.reliability.harness import (
    VALIDATE,
    assert_consistent,
    assert_subset_of,
    differences,
    duplicate_keys,
    fail_command,
    snapshot,
)


def invoke(*args: str):
    """`registry ARGS` in this process (no interpreter start-up): exit code, stdout and stderr as a user sees."""
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


class Commands(monitoring.CommandListener):
    """The commands a client sent, with their transaction numbers (a retried write reuses its number)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, object]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, event.command.get("txnNumber")))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_secantusdb_makes_writes_retryable(failpoint_daemon):
    """pymongo retries writes only on servers with sessions in a replica-set or sharded topology."""
    hello = pymongo.MongoClient(failpoint_daemon.uri).admin.command("hello")
    assert hello.get("setName") and hello.get("logicalSessionTimeoutMinutes")


def test_a_connection_dropped_mid_ingest_is_retried_and_nothing_is_lost_or_doubled(failpoint_daemon, mp20_150):
    listener = Commands()
    reg = Registry(f"{failpoint_daemon.uri}rel_{uuid.uuid4().hex[:8]}")
    reg.__dict__["client"] = pymongo.MongoClient(reg.uri, event_listeners=[listener], **reg.client_options())
    reg.ensure_indexes(["structures", "rejects"])
    with fail_command(reg.client, ["insert"], mode={"times": 1}, closeConnection=True):
        report = Ingestor(reg).write(mp20_150[:40])
    assert report.ingested == 40 and reg.count() == 40
    updates = [txn for name, txn in listener.sent if name == "insert"]
    assert len(updates) == len(set(updates)) + 1, "the dropped insert is sent again with its transaction number"
    assert duplicate_keys(reg, ["structures"]) == []


@pytest.mark.parametrize(("commands", "data"), [
    (["update"], {"closeConnection": True}),
    (["update"], {"errorCode": 91}),  # ShutdownInProgress: labelled RetryableWriteError
    (["find", "aggregate"], {"errorCode": 91}),  # reads are retried once too
], ids=["update-dropped", "update-shutting-down", "read-shutting-down"])
def test_a_build_retries_a_failed_write_or_read_once_transparently(failpoint_daemon, validate_reference, commands,
                                                                   data):
    reference, reg = validate_reference.state, validate_reference.inputs(failpoint_daemon.uri)
    with fail_command(reg.client, commands, mode={"times": 1}, **data):
        result = invoke("--db", reg.uri, "build", "validate", "--top", "0")
    assert result.exit_code == 0, result.stderr
    assert differences(snapshot(reg, VALIDATE), reference) == []


@pytest.mark.parametrize(("commands", "mode", "data"), [
    (["update"], {"skip": 1, "times": 2}, {"closeConnection": True}),  # one chunk lands, then the retry fails too
    (["update"], "alwaysOn", {"errorCode": 2}),  # BadValue: not a retryable error
    (["find"], {"skip": 5, "times": 2}, {"closeConnection": True}),  # mid-stage: a read retried once, failing again
    (["getMore"], {"times": 1}, {"errorCode": 91}),  # reading the 149 formula groups; getMore is never retried
], ids=["update-dropped-twice", "update-error", "find-dropped-twice", "getMore-error"])
def test_a_command_that_keeps_failing_stops_the_stage_cleanly_and_a_rerun_completes(
        failpoint_daemon, validate_reference, commands, mode, data):
    reference, reg = validate_reference.state, validate_reference.inputs(failpoint_daemon.uri)
    with fail_command(reg.client, commands, mode=mode, **data):
        failed = invoke("--db", reg.uri, "build", "validate", "--top", "0")
    assert failed.exit_code == 2, failed.output
    [line] = failed.stderr.strip().splitlines()
    assert line.startswith(f"error: database at {reg.uri} failed: ")
    assert_consistent(reg, ("structures", *VALIDATE))
    assert_subset_of(reg, reference, VALIDATE)

    assert invoke("--db", reg.uri, "build", "validate", "--top", "0").exit_code == 0
    assert differences(snapshot(reg, VALIDATE), reference) == []


def test_a_query_whose_getmore_fails_is_one_error_line_and_a_retry_reads_everything(failpoint_daemon,
                                                                                   validate_reference):
    reg = validate_reference.inputs(failpoint_daemon.uri)
    query = ("--db", reg.uri, "query", "{}", "--limit", "0", "--format", "csv", "--fields", "registry_id")
    with fail_command(reg.client, ["getMore"], mode={"times": 1}, errorCode=91):
        failed = invoke(*query)
    assert failed.exit_code == 2
    assert len(failed.stderr.strip().splitlines()) == 1
    assert len(invoke(*query).stdout.splitlines()) == 1 + 150


def test_an_insert_dropped_mid_command_is_retried_and_made_once(failpoint_daemon, validate_reference):
    """`sets create` inserts (through mongoengine): dropped every time, it fails cleanly; dropped once, the retry
    makes the set, once."""
    reg = validate_reference.inputs(failpoint_daemon.uri)
    with fail_command(reg.client, ["insert"], closeConnection=True):
        failed = invoke("--db", reg.uri, "sets", "create", "shortlist")
    assert failed.exit_code == 2 and len(failed.stderr.strip().splitlines()) == 1, failed.output
    assert reg.collection("candidate_sets").count_documents({}) == 0
    with fail_command(reg.client, ["insert"], mode={"times": 1}, closeConnection=True):
        created = invoke("--db", reg.uri, "sets", "create", "shortlist")
    assert created.exit_code == 0, created.output
    assert reg.collection("candidate_sets").count_documents({"name": "shortlist"}) == 1

"""Faults: a build killed with SIGKILL anywhere, the database stopped under a running command. Every time: only
complete documents in the database, one clear error line and exit code 2 where a process is left to report,
and a re-run that ends exactly where an uninterrupted run ends. (Failed commands: test_failpoints.py.)"""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pymongo
import pytest

from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from tests.reliability.harness import (
    ROOT,
    VALIDATE,
    KillPoint,
    assert_consistent,
    cli_env,
    clone,
    differences,
    error_lines,
    fresh,
    kill_points,
    registry_cmd,
    run_cli,
    run_with_kills,
    snapshot,
    timed_run,
)

# the second tier off: each killed run would load and check SevenNet again (minutes of CI); refine is a StageBuilder
# like the others, whose crash safety this test holds
BUILD_ALL = ("build", "all", "--steps", "3", "--scope", "{}", "--top", "0", "--refine-potential", "none")


# --- SIGKILL ---

@pytest.fixture(scope="module")
def chain_reference(server, tiny_chain):
    """An uninterrupted `build all`: its final state and how long each stage took (to place kill points)."""
    reg = fresh(server.uri, tiny_chain)
    code, durations = timed_run(("--db", f"{reg.uri}", *BUILD_ALL), cli_env())
    assert code == 0
    yield snapshot(reg), durations
    reg.client.drop_database(reg.database)


def test_kill_9_during_validate_then_rerun_ends_as_an_uninterrupted_run(server, validate_reference):
    """Killed once a quarter, half and three quarters of the groups are written: each kill lands mid-stage."""
    reference = validate_reference.state
    reg = validate_reference.inputs(server.uri)
    try:
        total = len(reference["validated"])
        points = [KillPoint("validate", written=total * k // 4) for k in (1, 2, 3)]
        trial = run_with_kills(("--db", reg.uri, "build", "validate", "--top", "0"), points, cli_env(), reg=reg)
        assert [(r.landed, r.returncode) for r in trial.runs] == [("validate", -9)] * 3
        assert trial.final_returncode == 0
        assert_consistent(reg, ("structures", *VALIDATE))
        assert differences(snapshot(reg, VALIDATE), reference) == []
    finally:
        reg.client.drop_database(reg.database)


def test_kill_9_anywhere_in_the_chain_then_rerun_ends_as_an_uninterrupted_run(server, tiny_chain, chain_reference):
    """9 kill points over 3 chains (fixed seeds), each run resuming what the one before left (bench/faults.py
    runs 5 chains of 4 by default, and prints where each kill landed)."""
    reference, durations = chain_reference
    landed = []
    for seed in range(3):
        reg = fresh(server.uri, tiny_chain)
        try:
            trial = run_with_kills(("--db", reg.uri, *BUILD_ALL), kill_points(durations, 3, seed=seed), cli_env())
            landed += [r.landed for r in trial.runs]
            assert trial.final_returncode == 0
            assert_consistent(reg)
            assert differences(snapshot(reg), reference) == [], f"seed {seed}: {trial.runs}"
        finally:
            reg.client.drop_database(reg.database)
    assert len(set(landed) - {"finished"}) >= 3, landed


# --- the database stops under a running command ---

def test_the_database_stopped_mid_build_is_one_error_line_and_loses_nothing(tmp_path, validate_reference):
    reference = validate_reference.state
    server = EmbeddedServer(tmp_path / "home")
    reg = clone(validate_reference.registry, server.ensure_running(auth=False).uri)
    env = cli_env()
    try:
        proc = subprocess.Popen(registry_cmd("--db", reg.uri, "build", "validate", "--top", "0"),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)
        deadline = time.monotonic() + 60
        while reg.count(collection="validated") == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        written = {d["registry_id"] for d in reg.find(collection="validated", fields=["registry_id"])}
        reg.client.close()
        assert written and server.stop()
        _, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 2, stderr
        [line] = error_lines(stderr)
        assert line.startswith("error: ")

        reg = Registry(f"{server.ensure_running(auth=False).uri}{reg.database}")
        assert reg.count() == 150
        assert written <= {d["registry_id"] for d in reg.find(collection="validated", fields=["registry_id"])}
        assert_consistent(reg, ("structures", *VALIDATE))
        assert run_cli("--db", reg.uri, "build", "validate", "--top", "0", env=env).returncode == 0
        assert differences(snapshot(reg, VALIDATE), reference) == []
    finally:
        server.stop()


def test_acknowledged_writes_survive_a_crash_of_the_embedded_server(tmp_path):
    """The embedded server syncs every commit (--sync-on-commit): without it, SIGKILL lost 10-23 of 2,000
    acknowledged single inserts (bench/faults.py)."""
    server = EmbeddedServer(tmp_path / "home")
    try:
        client = pymongo.MongoClient(server.ensure_running(auth=False).uri, serverSelectionTimeoutMS=5000)
        coll = client.durable.docs
        for i in range(300):
            coll.insert_one({"i": i})  # each acknowledged before the next is sent
        os.kill(server.status().pid, signal.SIGKILL)
        client.close()
        time.sleep(0.5)
        with pymongo.MongoClient(server.ensure_running(auth=False).uri, serverSelectionTimeoutMS=5000) as again:
            assert again.durable.docs.count_documents({}) == 300
    finally:
        server.stop()

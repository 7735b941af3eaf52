"""What was tried against the registry, and what held: kill -9 during builds, failed commands, the database
stopped mid-command, two builds of one stage at once.

    python bench/faults.py [--chains 5] [--points 4] [--seed 0] [--acknowledged 2000] [--skip-kills] [--only PART]

Uses the same harness as tests/reliability (each check here is asserted there):

1. kill -9: `registry build all --steps 3 --scope {}` on 4 tiny structures, killed at --points random points per
   chain (stage drawn at random, delay uniform within that stage's duration in an uninterrupted run), each run
   resuming the last; then one run to the end. Held: the final state equals the uninterrupted run's (timestamps,
   ids and wall times aside), every document matches its schema, no key twice.
2. failCommand (SecantusDB's failpoint, with --enable-test-commands) on `registry build validate` of 150 MP-20
   structures: whether pymongo retried it, else the exit code and error lines; whether what was written is complete
   and part of the final result; whether a re-run ends as the uninterrupted run.
3. The database stopped (SIGTERM) or killed (SIGKILL) under a running `build validate`; and --acknowledged single
   inserts, each acknowledged before the next is sent, then the server killed (SIGKILL): how many are still there
   after a restart, for the registry's embedded server (started with --sync-on-commit) and for `secantusd-py`
   without that flag.
4. Two `build validate` processes at once: documents processed in all (duplicated work), keys twice, final state.
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pymongo
from rich.console import Console
from rich.table import Table

from builders.chain import STAGES
from registry.db.client import Registry
from registry.db.server import EmbeddedServer
from tests.reliability.harness import (
    ROOT,
    VALIDATE,
    cli_env,
    clone,
    differences,
    duplicate_keys,
    error_lines,
    fail_command,
    fresh,
    invalid_documents,
    kill_points,
    mp20_records,
    registry_cmd,
    run_cli,
    run_with_kills,
    same,
    snapshot,
    start_daemon,
    timed_run,
    tiny_chain_records,
)

BUILD_ALL = ("build", "all", "--steps", "3", "--scope", "{}", "--top", "0")
VALIDATE_ARGS = ("build", "validate", "--top", "0")
FAILPOINTS = [  # command, mode, data, what it stands for
    ("update", {"times": 1}, {"closeConnection": True}, "connection dropped once"),
    ("update", {"times": 1}, {"errorCode": 91}, "ShutdownInProgress once (retryable code)"),
    ("update", {"skip": 1, "times": 2}, {"closeConnection": True}, "dropped, and again on the retry"),
    ("update", "alwaysOn", {"errorCode": 2}, "BadValue (not retryable)"),
    ("aggregate", {"times": 1}, {"closeConnection": True}, "connection dropped once"),
    ("find", {"times": 1}, {"errorCode": 91}, "ShutdownInProgress once (retryable code)"),
    ("getMore", {"times": 1}, {"errorCode": 91}, "ShutdownInProgress once"),
    ("getMore", {"times": 1}, {"closeConnection": True}, "connection dropped once"),
]


def consistent(reg: Registry, reference: dict, collections=VALIDATE) -> bool:
    """Only schema-valid documents, each key once, each one as the uninterrupted run has it."""
    here = snapshot(reg, collections)
    return (not invalid_documents(reg, ("structures", *collections)) and not duplicate_keys(reg, collections)
            and all(same(reference[c].get(k), d) for c in collections for k, d in here[c].items()))


def yes(flag: bool) -> str:
    return "yes" if flag else "NO"


def kills(server_uri: str, chains: int, points: int, seed: int) -> Table:
    records = tiny_chain_records()
    ref = fresh(server_uri, records)
    code, durations = timed_run(("--db", ref.uri, *BUILD_ALL), cli_env())
    assert code == 0, "the uninterrupted reference run failed"
    reference = snapshot(ref)
    landed: dict[str, list[bool]] = {}
    for chain in range(chains):
        reg = clone(ref, server_uri)
        trial = run_with_kills(("--db", reg.uri, *BUILD_ALL), kill_points(durations, points, seed=seed + chain),
                               cli_env())
        held = (trial.final_returncode == 0 and not differences(snapshot(reg), reference)
                and not invalid_documents(reg) and not duplicate_keys(reg))
        for run in trial.runs:
            landed.setdefault(run.landed, []).append(held)
        reg.client.drop_database(reg.database)
    ref.client.drop_database(ref.database)
    timing = ", ".join(f"{s} {t:.1f}s" for s, t in durations.items())
    table = Table("stage killed in", "kill points", "chains ending as the uninterrupted run",
                  title=f"kill -9 during `registry build all` ({chains} chains x {points} kills, seeds "
                        f"{seed}..{seed + chains - 1}; uninterrupted stage durations: {timing})")
    for stage in [*STAGES, "finished"]:
        if stage in landed:
            table.add_row(stage, str(len(landed[stage])), f"{sum(landed[stage])}/{len(landed[stage])}")
    return table


def failpoints(server_uri: str, folder: Path) -> Table:
    ref = fresh(server_uri, mp20_records(150))
    assert run_cli("--db", ref.uri, *VALIDATE_ARGS, env=cli_env()).returncode == 0
    reference = snapshot(ref, VALIDATE)
    daemon = start_daemon(folder / "failpoints", "--enable-test-commands")
    table = Table("command", "failure", "exit code", "outcome", "left only complete, final documents",
                  "re-run matches", title="failCommand during `registry build validate` (150 structures)")
    try:
        for command, mode, data, what in FAILPOINTS:
            reg = clone(ref, daemon.uri)
            with fail_command(reg.client, [command], mode=mode, **data):
                run = run_cli("--db", reg.uri, *VALIDATE_ARGS, env=cli_env())
            errors = error_lines(run.stderr)
            if run.returncode == 0:
                outcome = "retried: completed" if not errors else "completed with output on stderr"
            else:
                outcome = f"stopped: {len(errors)} error line(s): {errors[0][:70] if errors else ''}"
            partial_ok = consistent(reg, reference)
            rerun = run_cli("--db", reg.uri, *VALIDATE_ARGS, env=cli_env()).returncode == 0
            matches = rerun and not differences(snapshot(reg, VALIDATE), reference)
            table.add_row(command, f"{what} ({mode})", str(run.returncode), outcome, yes(partial_ok), yes(matches))
            reg.client.drop_database(reg.database)
    finally:
        daemon.stop()
        ref.client.drop_database(ref.database)
    return table


def stopped(source_uri: str, folder: Path) -> Table:
    ref = fresh(source_uri, mp20_records(150))
    assert run_cli("--db", ref.uri, *VALIDATE_ARGS, env=cli_env()).returncode == 0
    reference = snapshot(ref, VALIDATE)
    table = Table("how", "exit code", "error lines", "documents seen before the stop", "still there after restart",
                  "re-run matches", title="the database stopped under a running `registry build validate`")
    for how in ("SIGTERM (registry db stop)", "SIGKILL (crash)"):
        server = EmbeddedServer(folder / f"home-{how.split()[0]}")
        reg = clone(ref, server.ensure_running(auth=False).uri)
        proc = subprocess.Popen(registry_cmd("--db", reg.uri, *VALIDATE_ARGS), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env())
        deadline = time.monotonic() + 120
        while not reg.count(collection="validated") and time.monotonic() < deadline:
            time.sleep(0.02)
        seen = {d["registry_id"] for d in reg.find(collection="validated", fields=["registry_id"])}
        reg.client.close()
        if how.startswith("SIGTERM"):
            server.stop()
        else:
            os.kill(server.status().pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
        reg = Registry(f"{server.ensure_running(auth=False).uri}{reg.database}")
        kept = seen <= {d["registry_id"] for d in reg.find(collection="validated", fields=["registry_id"])}
        rerun = run_cli("--db", reg.uri, *VALIDATE_ARGS, env=cli_env()).returncode == 0
        matches = rerun and not differences(snapshot(reg, VALIDATE), reference) and consistent(reg, reference)
        table.add_row(how, str(proc.returncode), str(len(error_lines(stderr))), str(len(seen)), yes(kept),
                      yes(matches))
        reg.client.close()
        server.stop()
    ref.client.drop_database(ref.database)
    return table


def _insert_then_kill(uri: str, n: int, kill) -> float:
    """Seconds the n acknowledged inserts took (the cost of syncing each commit, in the worst case: one per write)."""
    client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000)
    t = time.perf_counter()
    for i in range(n):
        client.durable.docs.insert_one({"i": i})  # acknowledged before the next is sent
    seconds = time.perf_counter() - t
    kill()
    client.close()
    return seconds


def _count(uri: str) -> int:
    with pymongo.MongoClient(uri, serverSelectionTimeoutMS=5000) as client:
        return client.durable.docs.count_documents({})


def acknowledged(folder: Path, n: int) -> Table:
    table = Table("server", "acknowledged inserts", "seconds", "there after restart", "lost",
                  title=f"{n} acknowledged single inserts, then SIGKILL of the database server")
    server = EmbeddedServer(folder / "home-durable")
    try:
        seconds = _insert_then_kill(server.ensure_running(auth=False).uri, n,
                                    lambda: os.kill(server.status().pid, signal.SIGKILL))
        time.sleep(0.5)
        kept = _count(server.ensure_running(auth=False).uri)
    finally:
        server.stop()
    table.add_row("the registry's embedded server (--sync-on-commit)", str(n), f"{seconds:.1f}", str(kept), str(n - kept))
    daemon = start_daemon(folder / "no-sync")
    try:
        seconds = _insert_then_kill(daemon.uri, n, daemon.proc.kill)
        daemon.proc.wait(30)
        daemon = start_daemon(folder / "no-sync", port=daemon.port)
        kept = _count(daemon.uri)
    finally:
        daemon.stop()
    table.add_row("secantusd-py without --sync-on-commit", str(n), f"{seconds:.1f}", str(kept), str(n - kept))
    return table


def concurrent(server_uri: str) -> Table:
    ref = fresh(server_uri, mp20_records(150))
    assert run_cli("--db", ref.uri, *VALIDATE_ARGS, env=cli_env()).returncode == 0
    reference = snapshot(ref, VALIDATE)
    reg = clone(ref, server_uri)
    procs = [subprocess.Popen(registry_cmd("--db", reg.uri, *VALIDATE_ARGS), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT, env=cli_env()) for _ in range(2)]
    outs = [p.communicate(timeout=300)[0] for p in procs]
    done = [int(re.search(r"^validate\s+processed\s+(\d+)", out, re.M).group(1)) if p.returncode == 0 else 0
            for p, out in zip(procs, outs, strict=True)]
    table = Table("exit codes", "documents processed (each)", "documents in target", "duplicated work",
                  "keys twice", "final state matches", title="two `registry build validate` at once, 150 structures")
    n = len(reference["validated"])
    table.add_row(" ".join(str(p.returncode) for p in procs), " + ".join(map(str, done)), str(reg.count(
        collection="validated")), f"{(sum(done) - n) / n:.0%}", str(len(duplicate_keys(reg, VALIDATE))),
        yes(not differences(snapshot(reg, VALIDATE), reference)))
    for r in (reg, ref):
        r.client.drop_database(r.database)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chains", type=int, default=5)
    parser.add_argument("--points", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--acknowledged", type=int, default=2000, help="Single inserts before the server is killed.")
    parser.add_argument("--skip-kills", action="store_true", help="Only the faster parts 2-4.")
    parser.add_argument("--only", choices=["kills", "failpoints", "stopped", "acknowledged", "concurrent"],
                        help="Run one part.")
    args = parser.parse_args()
    wanted = lambda part: args.only in (None, part) and not (part == "kills" and args.skip_kills)  # noqa: E731
    console = Console(width=150)
    with tempfile.TemporaryDirectory() as folder:
        server = EmbeddedServer(Path(folder) / "home")
        try:
            uri = server.ensure_running(auth=False).uri
            if wanted("kills"):
                console.print(kills(uri, args.chains, args.points, args.seed))
            if wanted("failpoints"):
                console.print(failpoints(uri, Path(folder)))
            if wanted("stopped"):
                console.print(stopped(uri, Path(folder)))
            if wanted("acknowledged"):
                console.print(acknowledged(Path(folder), args.acknowledged))
            if wanted("concurrent"):
                console.print(concurrent(uri))
        finally:
            server.stop()


if __name__ == "__main__":
    main()

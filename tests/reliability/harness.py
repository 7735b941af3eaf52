"""What the reliability tests and `bench/faults.py` share: running `registry` as a real process (to kill it),
a SecantusDB daemon with test commands (to inject failures), and comparing a registry's final state with another's.

Two registries built from the same inputs hold the same documents up to what records *when* or *where* something
happened: timestamps, `_id`, maggma's `_bt`, wall times. `snapshot` drops exactly those.
"""

from __future__ import annotations

import math
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

import pymongo
from pydantic import ValidationError
from pymatgen.core import Lattice, Structure

from builders.chain import STAGES, TARGETS
from registry.db.client import Registry
from registry.db.server import _accepts, _daemon_executable, _free_port
from registry.db.stores import COLLECTIONS
from registry.io.ingest import Ingestor
from registry.io.readers import read_csv
from registry.io.records import Record
from schemas.stage import StageDoc
from tests.known import load_references

ROOT = Path(__file__).resolve().parents[2]
SAMPLE_CSV = ROOT / "registry" / "data" / "sample" / "mp20" / "train.csv"
VALIDATE = ("validated",)  # the validate stage's collection, as `snapshot` takes them
VOLATILE = {"_id", "_bt", "wall_s", "built_at", "seconds", "imported_at"}  # where and when, not what


# --- inputs ---

def tiny_chain_records() -> list[Record]:
    """Two known oxides, a new one and an invalid one: every stage of `build all` has work, in seconds."""
    from tests.builders.conftest import MP20_ROWS, generated, rocksalt

    mined = [r for r in read_csv(SAMPLE_CSV) if r.origin.source_id in MP20_ROWS]
    return [*mined, generated("mno", rocksalt(4.45, ("Mn", "O"))),
            generated("nacl2", Structure(Lattice.cubic(5.0), ["Na", "Cl", "Cl"],
                                         [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0, 0]]))]


def mp20_records(n: int) -> list[Record]:
    """The first n structures of the shipped MP-20 sample. With 150 (149 formulas), validate takes ~2 s and
    reading its groups back needs a getMore (more than the 101 documents of a first batch)."""
    return list(islice(read_csv(SAMPLE_CSV), n))


def fresh(server_uri: str, records: list[Record] | None = None) -> Registry:
    """A new database on `server_uri`, with `records` ingested and the catalogue's indexes."""
    reg = Registry(f"{server_uri}rel_{uuid.uuid4().hex[:10]}")
    if records:
        Ingestor(reg).write(records)
    reg.ensure_indexes()
    load_references(reg)  # a small reference set, so no build loads the whole one
    return reg


def clone(source: Registry, server_uri: str,
          collections: Sequence[str] = ("structures", "references", "reference_sets")) -> Registry:
    """A new database on `server_uri` holding copies of `source`'s `collections` (ingesting again would redo the
    symmetry analysis of every structure)."""
    reg = fresh(server_uri)
    for name in collections:
        reg.collection(name).delete_many({})
        docs = list(source.collection(name).find({}, {"_id": 0}))
        if docs:
            reg.collection(name).insert_many(docs)
    return reg


@dataclass
class Reference:
    """An uninterrupted run: its registry (to clone inputs from), final state, and seconds per stage."""

    registry: Registry
    state: dict[str, dict]
    durations: dict[str, float]

    def inputs(self, server_uri: str) -> Registry:
        """A new registry holding the reference's structures and nothing built."""
        return clone(self.registry, server_uri)


# --- running the CLI as a process ---

def cli_env(**extra: str) -> dict[str, str]:
    """The environment of a `registry` process: this checkout on the path, no REGISTRY_* settings inherited."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REGISTRY_")}
    env.update(PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1", REGISTRY_TIMEOUT_MS="3000", **extra)
    return env


def registry_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "cli", *args]


def run_cli(*args: str, env: Mapping[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(registry_cmd(*args), capture_output=True, text=True, timeout=timeout, cwd=ROOT,
                          env=dict(env or cli_env()))


def error_lines(stderr: str) -> list[str]:
    """stderr without the warnings libraries print on import (they are not the registry's error report)."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    return [line for line in lines if "Warning" not in line and not line.startswith(" ")]


# --- a daemon with test commands ---

@dataclass
class Daemon:
    """A `secantusd-py` process of our own, with flags the embedded server does not use."""

    proc: subprocess.Popen
    port: int

    @property
    def uri(self) -> str:
        return f"mongodb://127.0.0.1:{self.port}/"

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_daemon(storage: Path | str, *flags: str, port: int | None = None, wait_s: float = 60) -> Daemon:
    port = port or _free_port("127.0.0.1")
    proc = subprocess.Popen([_daemon_executable(), "--host", "127.0.0.1", "--port", str(port), "--storage-path",
                             str(storage), "--log-level", "ERROR", *flags],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + wait_s
    while not _accepts("127.0.0.1", port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"secantusd-py {' '.join(flags)} did not start (exit code {proc.poll()})")
        time.sleep(0.1)
    return Daemon(proc, port)


@contextmanager
def fail_command(client: pymongo.MongoClient, commands: Sequence[str], mode: Any = "alwaysOn",
                 **data: Any) -> Iterator[None]:
    """Arm SecantusDB's `failCommand` failpoint (mongod's syntax) for `commands`; disarm it afterwards."""
    client.admin.command("configureFailPoint", "failCommand", mode=mode,
                         data={"failCommands": list(commands), **data})
    try:
        yield
    finally:
        client.admin.command("configureFailPoint", "failCommand", mode="off")


# --- comparing registries ---

def comparable(value: Any) -> Any:
    """`value` without timestamps and the VOLATILE fields, at any depth."""
    if isinstance(value, Mapping):
        return {k: comparable(v) for k, v in value.items() if k not in VOLATILE and not isinstance(v, datetime)}
    if isinstance(value, list):
        return [comparable(v) for v in value]
    return value


def same(a: Any, b: Any, rel: float = 1e-9, abs_: float = 1e-12) -> bool:
    """Equal, floats within `rel` (or `abs_` near zero): quantities at machine-precision noise, such as the RMSD
    of a structure to itself, differ in their last bits from one run to the next."""
    if isinstance(a, float) or isinstance(b, float):
        return isinstance(a, int | float) and isinstance(b, int | float) and math.isclose(a, b, rel_tol=rel,
                                                                                           abs_tol=abs_)
    if isinstance(a, Mapping) and isinstance(b, Mapping):
        return a.keys() == b.keys() and all(same(a[k], b[k], rel, abs_) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(same(x, y, rel, abs_) for x, y in zip(a, b, strict=True))
    return a == b


def snapshot(reg: Registry, collections: Sequence[str] = ("structures", *TARGETS.values())) -> dict[str, dict]:
    """collection -> key -> comparable document."""
    out = {}
    for name in collections:
        key = COLLECTIONS[name].key
        out[name] = {d[key]: comparable(d) for d in reg.collection(name).find()}
    return out


def differences(a: Mapping[str, dict], b: Mapping[str, dict], limit: int = 5) -> list[str]:
    """What differs between two snapshots, for an assertion message (empty when equal)."""
    out = []
    for name in sorted(set(a) | set(b)):
        da, db = a.get(name, {}), b.get(name, {})
        if missing := sorted(set(da) - set(db)):
            out.append(f"{name}: only in the first: {missing[:limit]}")
        if extra := sorted(set(db) - set(da)):
            out.append(f"{name}: only in the second: {extra[:limit]}")
        for key in sorted(set(da) & set(db)):
            if not same(da[key], db[key]):
                fields = sorted(k for k in set(da[key]) | set(db[key]) if not same(da[key].get(k), db[key].get(k)))
                out.append(f"{name}/{key}: fields differ: {fields}")
    return out[:50]


def invalid_documents(reg: Registry, collections: Sequence[str] = ("structures", *TARGETS.values())) -> list[str]:
    """Every stored document that is not a complete document of its collection's schema, with the reason."""
    problems = []
    for name in collections:
        for doc in reg.collection(name).find():
            body = {k: v for k, v in doc.items() if k not in ("_id", "_bt")}
            schema = COLLECTIONS[name].schema
            if schema is None:
                raise KeyError(f"no schema for the collection {name!r}: add it to registry.db.stores.COLLECTIONS")
            model = StageDoc if body.get("state") == "failed" else schema
            try:
                model.model_validate(body)
            except ValidationError as exc:
                err = exc.errors()[0]
                problems.append(f"{name}/{body.get(COLLECTIONS[name].key)}: {'.'.join(map(str, err['loc']))}: "
                                f"{err['msg']}")
    return problems


def duplicate_keys(reg: Registry, collections: Sequence[str] = ("structures", *TARGETS.values())) -> list[str]:
    out = []
    for name in collections:
        key = COLLECTIONS[name].key
        for g in reg.collection(name).aggregate([{"$group": {"_id": f"${key}", "n": {"$sum": 1}}},
                                                 {"$match": {"n": {"$gt": 1}}}]):
            out.append(f"{name}/{g['_id']} x{g['n']}")
    return out


def assert_consistent(reg: Registry, collections: Sequence[str] | None = None) -> None:
    """Only complete documents (each valid against its schema), each key once."""
    kwargs = {"collections": collections} if collections else {}
    assert invalid_documents(reg, **kwargs) == []
    assert duplicate_keys(reg, **kwargs) == []


def assert_subset_of(reg: Registry, reference: Mapping[str, dict], collections: Sequence[str]) -> None:
    """What a stopped stage left is part of the final result, never a different or partial document."""
    here = snapshot(reg, collections)
    for name in collections:
        for key, doc in here[name].items():
            assert same(reference[name].get(key), doc), f"{name}/{key} differs from the uninterrupted run"


# --- killing a build ---

@dataclass(frozen=True)
class KillPoint:
    """Kill -9 the build `delay` seconds after `stage` began (the stage before it printed its line), or, with
    `written`, once the stage's target holds that many documents: progress that no machine's speed can outrun."""

    stage: str
    delay: float = 0.0
    written: int | None = None


@dataclass
class KilledRun:
    point: KillPoint
    landed: str  # the stage that was running when the signal arrived ("finished" if the run ended first)
    returncode: int


@dataclass
class KillTrial:
    runs: list[KilledRun] = field(default_factory=list)
    final_returncode: int | None = None


def stage_durations(stdout_times: Sequence[tuple[float, str]]) -> dict[str, float]:
    """Seconds each stage took, from the times its line (and the one before) appeared."""
    out, previous = {}, 0.0
    for t, line in stdout_times:
        stage = line.split()[0] if line.strip() else ""
        if stage in STAGES:
            out[stage] = t - previous
            previous = t
    return out


def timed_lines(proc: subprocess.Popen) -> tuple[list[tuple[float, str]], threading.Thread]:
    """Collect (seconds since start, line) from the process's stdout on a thread."""
    start = time.monotonic()
    lines: list[tuple[float, str]] = []

    def read() -> None:
        for line in proc.stdout:
            lines.append((time.monotonic() - start, line))

    thread = threading.Thread(target=read, daemon=True)
    thread.start()
    return lines, thread


def timed_run(args: Sequence[str], env: Mapping[str, str], timeout: float = 300) -> tuple[int, dict[str, float]]:
    """Run `registry *args` to the end; its exit code and how long each stage took."""
    proc = subprocess.Popen(registry_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT, env=dict(env))
    lines, reader = timed_lines(proc)
    proc.wait(timeout)
    reader.join(5)
    return proc.returncode, stage_durations(lines)


def _stages_done(lines: Sequence[tuple[float, str]]) -> list[str]:
    return [line.split()[0] for _, line in lines if line.strip() and line.split()[0] in STAGES]


def _wait_for_documents(proc: subprocess.Popen, reg: Registry, collection: str, n: int, deadline: float) -> None:
    while proc.poll() is None and time.monotonic() < deadline and reg.count(collection=collection) < n:
        time.sleep(0.005)


def kill_at(args: Sequence[str], point: KillPoint, env: Mapping[str, str], timeout: float = 300,
            reg: Registry | None = None) -> KilledRun:
    """Start `registry *args`, SIGKILL it at `point` (`reg` reads its progress), and say in which stage it landed."""
    proc = subprocess.Popen(registry_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            cwd=ROOT, env=dict(env))
    lines, reader = timed_lines(proc)
    index = STAGES.index(point.stage)
    deadline = time.monotonic() + timeout
    while proc.poll() is None and time.monotonic() < deadline:
        if index == 0 or set(STAGES[index - 1:]) & set(_stages_done(lines)):  # a stage that prints nothing
            break                                                                # is passed over
        time.sleep(0.01)
    if point.written is None:
        time.sleep(point.delay)
    else:
        _wait_for_documents(proc, reg, TARGETS[point.stage], point.written, deadline)
    landed = "finished"
    if proc.poll() is None:
        last = max((STAGES.index(s) for s in _stages_done(lines)), default=-1)
        proc.send_signal(signal.SIGKILL)
        landed = STAGES[last + 1] if last + 1 < len(STAGES) else "finished"
    proc.wait(timeout)
    reader.join(5)
    return KilledRun(point, landed, proc.returncode)


def kill_points(durations: Mapping[str, float], n: int, seed: int, stages: Sequence[str] | None = None,
                ) -> list[KillPoint]:
    """`n` kill points, stages drawn uniformly from `stages` and delays uniformly within each stage's duration."""
    rng = random.Random(seed)
    stages = list(stages or [s for s in STAGES if s in durations])
    points = [KillPoint(s, round(rng.uniform(0, durations[s]), 3)) for s in (rng.choice(stages) for _ in range(n))]
    return sorted(points, key=lambda p: (STAGES.index(p.stage), p.delay))


def run_with_kills(args: Sequence[str], points: Sequence[KillPoint], env: Mapping[str, str],
                   timeout: float = 300, reg: Registry | None = None) -> KillTrial:
    """Kill a build at each point in turn (each run resumes what the last left), then let one run finish."""
    trial = KillTrial()
    for point in points:
        trial.runs.append(kill_at(args, point, env, timeout, reg))
    trial.final_returncode = run_cli(*args, env=env, timeout=timeout).returncode
    return trial

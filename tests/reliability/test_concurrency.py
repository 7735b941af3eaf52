"""Concurrency: two builds of one stage at once, and ingest/generate while a build runs.

The design under test: stage targets are upserts keyed by a unique index, and a target document takes its
source's timestamp. Two processes that take the same item both write the same document (wasted work, measured
by `bench/faults.py`), never two documents; a source that changes while a build runs is newer than the target
the build writes for it, so the next run redoes it.
"""

from __future__ import annotations

import re
import subprocess
import time
from itertools import islice

from click.testing import CliRunner

from builders.chain import build
from cli.main import cli
from registry.io.ingest import Ingestor
from registry.io.readers import read_csv
from tests.reliability.harness import (
    ROOT,
    SAMPLE_CSV,
    VALIDATE,
    assert_consistent,
    cli_env,
    clone,
    differences,
    fresh,
    registry_cmd,
    snapshot,
)
from tests.seeded import seed

CDVAE_SAMPLES = ROOT / "registry" / "data" / "sample" / "cdvae" / "eval_gen_arrays.npz"


def start(*args: str) -> subprocess.Popen:
    return subprocess.Popen(registry_cmd(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=cli_env())


def processed(stdout: str, stage: str) -> int:
    return int(re.search(rf"^{stage}\s+processed\s+(\d+)", stdout, re.M).group(1))


def test_two_validate_builds_at_once_write_every_group_once(server, validate_reference):
    """A group stage (upsert, then delete what the group no longer has) run twice concurrently."""
    reg = validate_reference.inputs(server.uri)
    try:
        procs = [start("--db", reg.uri, "build", "validate", "--top", "0") for _ in range(2)]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
        assert_consistent(reg, ("structures", *VALIDATE))
        assert differences(snapshot(reg, VALIDATE), validate_reference.state) == []
        assert sum(processed(out, "validate") for out, _ in outputs) >= 150
    finally:
        reg.client.drop_database(reg.database)


def test_two_rank_builds_at_once_write_every_candidate_once(server):
    """A one-document-per-item stage (maggma's ReplaceOne upserts) run twice concurrently."""
    reg = fresh(server.uri)
    try:
        seed(reg)
        reference = snapshot(reg, ("candidates",))
        reg.collection("candidates").delete_many({})
        procs = [start("--db", reg.uri, "build", "rank", "--scope", "{}", "--top", "0") for _ in range(2)]
        outputs = [p.communicate(timeout=300) for p in procs]
        assert [p.returncode for p in procs] == [0, 0], [err for _, err in outputs]
        assert_consistent(reg, ("candidates",))
        assert differences(snapshot(reg, ("candidates",)), reference) == []
    finally:
        reg.client.drop_database(reg.database)


def test_ingest_and_generate_during_a_build_are_picked_up_by_the_next_run(server, validate_reference):
    reg = validate_reference.inputs(server.uri)
    more = list(islice(read_csv(SAMPLE_CSV), 150, 170))
    changed = list(islice(read_csv(SAMPLE_CSV), 10))
    for record in changed:  # a corrected reference value: the same structure, new content
        record.reference["band_gap"] = (record.reference.get("band_gap") or 0.0) + 1.0
    try:
        proc = start("--db", reg.uri, "build", "validate", "--top", "0")
        deadline = time.monotonic() + 120
        while not reg.count(collection="validated") and time.monotonic() < deadline:  # it has listed its items
            time.sleep(0.01)
        report = Ingestor(reg).write(more + changed)
        generated = CliRunner().invoke(cli, ["--db", reg.uri, "generate", "cdvae", str(CDVAE_SAMPLES), "--limit", "20"])
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert generated.exit_code == 0, generated.output
        assert (report.ingested, report.updated) == (20, 10)

        again = CliRunner().invoke(cli, ["--db", reg.uri, "build", "validate", "--top", "0"])
        assert again.exit_code == 0 and processed(again.stdout, "validate") > 0

        scratch = clone(reg, server.uri)  # the same final inputs, validated in one uninterrupted run
        build(scratch, "validate", progress=False)
        assert differences(snapshot(reg, VALIDATE), snapshot(scratch, VALIDATE)) == []
        assert_consistent(reg, ("structures", *VALIDATE))
        members = [m for d in reg.collection("validated").find() for m in d["members"]]
        assert sorted(members) == sorted(reg.collection("structures").distinct("registry_id"))
        scratch.client.drop_database(scratch.database)
    finally:
        reg.client.drop_database(reg.database)

"""maggma's distributed manager sends each worker `builder.as_dict()` updated with one `prechunk` dict. Doing the
same by hand checks that the chunks cover the work exactly once, with no network needed."""

from monty.json import MontyDecoder

from builders.chain import make_builder
from builders.run import run_builder


def run_as_workers(reg, stage, options, splits=2):
    manager = make_builder(reg, stage, options)
    manager.connect()
    chunks = list(manager.prechunk(splits))
    processed = 0
    for chunk in chunks:
        worker = MontyDecoder().process_decoded({**manager.as_dict(), **chunk})
        processed += run_builder(worker, stage, progress=False).processed
    return chunks, processed


def test_prechunks_cover_every_stage_exactly_once(loaded, fast, references):
    for stage, expected in (("validate", 4), ("screen", 3), ("relax", 3), ("refine", 3), ("predict", 3), ("stability", 3),
                            ("tunnels", None), ("rank", 3)):
        chunks, processed = run_as_workers(loaded, stage, fast)
        if expected is None:  # the tunnels gate: only what is under the preset's E_hull limit
            expected = loaded.count({"e_above_hull": {"$lte": 0.1}}, collection="stability")
        assert processed == expected, stage
        assert run_builder(make_builder(loaded, stage, fast), stage, progress=False).processed == 0, stage
    _, processed = run_as_workers(loaded, "funnel", fast)
    assert processed == 4 and loaded.count(collection="funnel") == 4
    assert len(loaded.collection("candidates").distinct("candidate_id")) == loaded.count(collection="candidates") == 3

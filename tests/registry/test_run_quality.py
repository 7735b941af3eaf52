"""A generation run's SUN figures on MatterGen's definitions, on a hand-made run whose answers are known
(tests/sun_run.py lists the samples and what each one is)."""

from __future__ import annotations

import uuid

import pytest
from pymatgen.core import Lattice, Structure

from registry.db.client import Registry
from registry.db.run_quality import measure, refresh
from registry.output.report import build_report
from registry.science.benchmarks import e_hull_bias
from registry.science.sun import relaxation_rmsd
from tests.known import load_references
from tests.sun_run import REFERENCE_SETS, hand_made_run, stability


@pytest.fixture(scope="module")
def run(server):
    """The hand-made run, built once for the tests that only read it."""
    name = f"test_{uuid.uuid4().hex[:10]}"
    reg = Registry(f"{server.uri}{name}")
    load_references(reg)
    run_id, reps = hand_made_run(reg)
    yield reg, run_id, reps
    reg.client.drop_database(name)


def test_every_sample_is_counted_and_each_figure_names_its_denominator(run):
    reg, run_id, _ = run
    q = measure(reg, run_id)
    assert (q.n_samples, q.n_rejected, q.n_validated, q.n_compared) == (9, 1, 8, 7)
    assert (q.n_valid, q.valid) == (7, 7 / 9)  # NaCl2 and the reject are not valid
    assert (q.n_unique, q.unique) == (6, 6 / 7)  # the MnO pair is one structure
    assert (q.n_novel, q.novel) == (6, 6 / 7)  # pyrolusite matches the known MnO2
    assert (q.n_novel_composition, q.novel_composition) == (3, 3 / 8)  # Mg3MnO5, Mg4MnO6 and NaCl2


def test_stable_is_over_every_sample_failures_and_pending_included(run):
    reg, run_id, _ = run
    q = measure(reg, run_id)
    assert (q.n_relaxed, q.n_failed, q.n_failed_relaxation, q.n_pending) == (5, 1, 1, 1)
    assert (q.n_evaluated, q.n_stable) == (5, 4)  # MnO twice, MnO2, Mg4MnO6
    assert (q.stable, q.stable_evaluated) == (4 / 9, 4 / 5)
    assert q.mean_e_above_hull == pytest.approx((0.02 + 0.02 + 0.0 + 0.3 + 0.05) / 5)


def test_sun_counts_each_novel_stable_structure_once(run):
    reg, run_id, _ = run
    q = measure(reg, run_id)
    assert (q.n_sun, q.sun) == (2, 2 / 9)  # MnO (once, though sampled twice) and Mg4MnO6; not the known MnO2
    assert (q.n_sun_composition, q.sun_composition) == (1, 1 / 9)  # Mg4MnO6 alone has a composition MP lacks


def test_rmsd_in_angstrom_and_what_the_figures_were_judged_against(run):
    reg, run_id, _ = run
    q = measure(reg, run_id)
    assert q.n_rmsd == 5
    assert q.mean_rmsd == pytest.approx((0.1 + 0.1) / 5)  # MnO's 0.1 Å twice, nothing moved elsewhere
    assert q.reference_sets == REFERENCE_SETS
    assert q.potentials == ["chgnet (CHGNet 0.3.0)"]
    assert q.e_hull_bias == e_hull_bias(["chgnet"])


def test_refresh_stores_the_figures_and_rewrites_them_only_when_the_build_changed(references):
    reg = references
    run_id, reps = hand_made_run(reg)
    ((rid, first, changed),) = refresh(reg, run_id)
    assert (rid, changed) == (run_id, True)
    stored = reg.find({"run_id": run_id}, "generation_runs", ["quality"])[0]["quality"]
    assert (stored["n_stable"], stored["stable"]) == (4, 4 / 9)

    assert refresh(reg)[0][2] is False  # nothing changed: nothing written
    stability(reg, reps["MgO"], 0.0)  # the pending MgO is evaluated (the relaxation is not needed for the count)
    ((_, after, changed),) = refresh(reg)
    assert changed and (after.n_stable, after.n_pending) == (5, 0)


def test_refresh_of_an_unknown_run_names_the_known_ones(run):
    reg, run_id, _ = run
    with pytest.raises(Exception, match=run_id):
        refresh(reg, "no-such-run")


def test_report_shows_the_run_beside_the_published_rows(run):
    reg, run_id, _ = run
    refresh(reg)
    page = build_report(reg)
    assert "Generators: stable, unique, novel" in page and run_id in page
    assert "0.444 4/9" in page and "0.243" in page  # the run's stable fraction, CDVAE's published one


def test_rmsd_ignores_a_rigid_shift_across_the_cell_boundary():
    s = Structure(Lattice.cubic(4.0), ["Mg", "O"], [[0.0, 0, 0], [0.5, 0.5, 0.5]])
    shifted = s.copy()
    shifted.translate_sites([0, 1], [-0.1, 0, 0])  # Mg wraps to x = 0.9
    assert relaxation_rmsd(s, shifted) == pytest.approx(0.0, abs=1e-12)
    one_moved = s.copy()
    one_moved.translate_sites([1], [0.3, 0, 0], frac_coords=False)
    assert relaxation_rmsd(s, one_moved) == pytest.approx(0.15)  # ±0.15 Å about the mean shift

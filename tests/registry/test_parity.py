"""Parity metrics on a tiny hand-made set, and the pairs a parity plot reads."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from registry.output.parity import classification, parity_pairs, parity_report, regression, stability_threshold

# (ML, DFT, id): errors ML - DFT = +0.1, -0.1, +0.2, 0.0
PAIRS = [(0.1, 0.0, "a"), (0.1, 0.2, "b"), (-0.1, -0.3, "c"), (0.5, 0.5, "d")]


def test_regression_metrics_by_hand():
    r = regression(PAIRS)
    assert r.n == 4
    assert r.mae == pytest.approx((0.1 + 0.1 + 0.2 + 0.0) / 4)
    assert r.rmse == pytest.approx(((0.01 + 0.01 + 0.04 + 0.0) / 4) ** 0.5)
    # DFT mean 0.1; SS_tot = 0.01 + 0.01 + 0.16 + 0.16 = 0.34; SS_res = 0.06
    assert r.r2 == pytest.approx(1 - 0.06 / 0.34)
    assert regression([]).mae is None and regression(PAIRS[:1]).r2 is None


def test_stability_classification_as_matbench_discovery_defines_it():
    # stable iff E_hull <= 0: ML says a: no, b: no, c: yes, d: no; DFT says a: yes, b: no, c: yes, d: no
    c = classification(PAIRS, threshold=0.0)
    assert (c.tp, c.fp, c.tn, c.fn) == (1, 0, 2, 1)
    assert c.precision == 1.0 and c.recall == 0.5 and c.f1 == pytest.approx(2 / 3) and c.accuracy == 0.75
    # with the tunnel preset's 0.1: ML calls a, b, c stable (0.1 <= 0.1); DFT calls a, c stable (b is 0.2)
    loose = classification(PAIRS, threshold=stability_threshold("tunnel"))
    assert (loose.tp, loose.fp, loose.tn, loose.fn) == (2, 1, 1, 0)
    assert loose.precision == pytest.approx(2 / 3) and loose.recall == 1.0
    assert classification([]).precision is None and classification([]).accuracy is None


def test_thresholds():
    assert stability_threshold(None) == 0.0
    assert stability_threshold("tunnel") == 0.1 and stability_threshold("paper") == 0.08


def test_pairs_and_report_from_comparison_documents(registry):
    now = datetime.now(UTC)
    docs = [
        {"registry_id": "x", "state": "successful", "dft_validated": True, "last_updated": now,
         "ml": {"formation_energy_per_atom": -1.7, "e_above_hull": 0.1, "band_gap": 0.5},
         "dft": {"formation_energy_per_atom": -1.65, "e_above_hull": 0.15, "band_gap": None}},
        {"registry_id": "y", "state": "successful", "dft_validated": False, "last_updated": now,
         "ml": {"formation_energy_per_atom": -2.9, "e_above_hull": -0.2, "band_gap": 4.0},
         "dft": {"formation_energy_per_atom": -3.0, "e_above_hull": 0.05, "band_gap": 4.5}},
        {"registry_id": "z", "state": "failed", "dft_validated": False, "last_updated": now},
    ]
    registry.collection("dft_comparison").insert_many(docs)
    registry.collection("candidates").insert_one({"candidate_id": "y:tunnel:Mg", "registry_id": "y",
                                                  "preset": "tunnel", "ion": "Mg", "passed": True})
    pairs = parity_pairs(registry)
    assert pairs["formation_energy_per_atom"] == [(-1.7, -1.65, "x"), (-2.9, -3.0, "y")]
    assert pairs["band_gap"] == [(4.0, 4.5, "y")]  # x has no DFT gap
    report = parity_report(registry)
    assert report.n_comparisons == 2 and report.n_validated == 1
    assert report.regression["e_above_hull"].mae == pytest.approx((0.05 + 0.25) / 2)
    assert report.classification.threshold == 0.0 and report.classification.fp == 1  # y: ML stable, DFT not
    tunnel = parity_report(registry, preset="tunnel", ion="Mg")
    assert tunnel.n_comparisons == 1 and tunnel.classification.threshold == 0.1
    assert [p[2] for p in parity_pairs(registry, preset="tunnel", ion="Zn")["e_above_hull"]] == []

import pytest

from registry.science.criteria import PRESETS, Criterion, evaluate, judge

CANDIDATE = {"elements": ["Mg", "Mn", "O"], "e_above_hull": 0.05, "has_1d_channel": True,
             "dimensionality": {"Mg": 1, "Zn": 1}, "admits": {"Mg": True, "Zn": False}, "band_gap": 0.5,
             "novel": True, "converged": True, "relaxation_sane": True, "formation_energy_per_atom": -2.0,
             "formula_known": False, "hull_complete": True, "average_voltage": {"Mg": 2.0},
             "conversion_preferred": {"Mg": False}}


def test_a_numeric_criterion_scores_its_margin():
    c = Criterion(name="e_hull", field="e_above_hull", op="<=", threshold=0.1, scale=0.1, weight=2.0)
    v = evaluate(c, {"e_above_hull": 0.05}, "Mg")
    assert v.passed and v.score == pytest.approx(2.0 * 0.75)
    assert evaluate(c, {"e_above_hull": 0.1}, "Mg").score == pytest.approx(1.0)  # at the threshold: half weight
    assert not evaluate(c, {"e_above_hull": 0.4}, "Mg").passed


def test_missing_values_fail_with_a_note():
    v = evaluate(Criterion(name="gap", field="band_gap", op="<=", threshold=0.5), {}, "Mg")
    assert not v.passed and "no value for band_gap" in v.note


def test_the_ion_placeholder_selects_the_working_ion():
    verdicts, passed, _ = judge(PRESETS["tunnel"], CANDIDATE, "Mg")
    assert passed
    assert {v.name: v.field for v in verdicts}["admits_ion"] == "admits.Mg"
    _, passed_zn, _ = judge(PRESETS["tunnel"], CANDIDATE, "Zn")
    assert not passed_zn


def test_a_host_needs_a_positive_insertion_voltage_and_its_ion_in_a_1d_channel():
    for change, failing in [({"average_voltage": {"Mg": -0.3}}, "insertion_voltage"),
                            ({"average_voltage": {}}, "insertion_voltage"),  # no insertion result: not shown a host
                            ({"dimensionality": {"Mg": 3}}, "one_d_channel"),  # anatase: paths in every direction
                            ({"relaxation_sane": False}, "relaxation_sane")]:
        verdicts, passed, _ = judge(PRESETS["tunnel"], {**CANDIDATE, **change}, "Mg")
        assert not passed
        assert [v.name for v in verdicts if v.hard and not v.passed] == [failing]


def test_conversion_is_a_soft_penalty():
    _, passed, score = judge(PRESETS["tunnel"], CANDIDATE, "Mg")
    _, converts, converting_score = judge(PRESETS["tunnel"], {**CANDIDATE, "conversion_preferred": {"Mg": True}}, "Mg")
    assert passed and converts and converting_score == pytest.approx(score - 1.0)


def test_soft_criteria_move_the_score_but_not_the_verdict():
    _, passed, score = judge(PRESETS["tunnel"], CANDIDATE, "Mg")
    _, passed_wide_gap, score_wide_gap = judge(PRESETS["tunnel"], {**CANDIDATE, "band_gap": 4.0}, "Mg")
    assert passed and passed_wide_gap
    assert score_wide_gap < score


def test_the_paper_preset_is_the_authors_screen():
    _, passed, _ = judge(PRESETS["paper"], CANDIDATE, "Mg")
    assert passed
    for change, failing in [({"band_gap": 0.6}, "band_gap"), ({"e_above_hull": 0.08}, "e_above_hull"),
                            ({"formation_energy_per_atom": -1.5}, "formation_energy"),
                            ({"elements": ["Mg", "Zn", "O"]}, "transition_metal"),
                            ({"formula_known": True}, "new_formula")]:
        verdicts, passed, _ = judge(PRESETS["paper"], {**CANDIDATE, **change}, "Mg")
        assert not passed
        assert [v.name for v in verdicts if not v.passed] == [failing]


def test_the_prefilter_applies_the_hard_criteria_validated_documents_can_decide():
    assert PRESETS["tunnel"].prefilter() == {"$and": [
        {"elements": {"$all": ["O"]}}, {"elements": {"$in": list(PRESETS["tunnel"].criteria[1].threshold)}},
        {"novel": True}]}
    paper = PRESETS["paper"].prefilter()
    assert paper == {"$and": [{"elements": {"$in": ["Ti", "V", "Cr", "Mn", "Fe", "Co", "Ni", "Cu"]}},
                              {"formula_known": False}]}


def test_the_screen_loosens_every_energy_limit_by_the_margin():
    assert PRESETS["tunnel"].screen_limits(0.5) == {"static_e_above_hull": pytest.approx(0.6)}
    assert PRESETS["paper"].screen_limits(0.25) == {"static_e_above_hull": pytest.approx(0.33),
                                                    "static_formation_energy_per_atom": pytest.approx(-1.25)}


def test_a_window_per_ion_scores_the_margin_to_the_nearer_bound():
    c = Criterion(name="v", field="average_voltage.{ion}", op="between", threshold={"Mg": (1.0, 3.5), "Zn": (0.8, 2.0)},
                  scale=0.5, hard=False)
    record = {"average_voltage": {"Mg": 3.25, "Zn": 2.25, "Ca": 2.0}}
    mg, zn, ca = (evaluate(c, record, ion) for ion in ("Mg", "Zn", "Ca"))
    assert mg.passed and mg.threshold == (1.0, 3.5) and mg.score == pytest.approx(0.75)  # 0.25 V inside
    assert not zn.passed and zn.score == pytest.approx(0.25)  # 0.25 V above Zn's window
    assert not ca.passed and ca.note == "no threshold for Ca"


def test_an_e_hull_from_an_incomplete_hull_fails_both_presets():
    for preset in ("tunnel", "paper"):
        verdicts, passed, _ = judge(PRESETS[preset], {**CANDIDATE, "hull_complete": False}, "Mg")
        assert not passed
        assert [v.name for v in verdicts if v.hard and not v.passed] == ["reference_hull"]

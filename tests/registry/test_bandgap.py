"""The composition band-gap model: what a user can rely on when loading, predicting and retraining it."""

import csv
import json
import shutil
from pathlib import Path

import pytest
import torch
from pymatgen.core import Lattice, Structure

from registry.science.bandgap import (
    CARD_FILE,
    CHECK_OXIDES,
    HELDOUT_MODEL,
    SHIPPED_MODEL,
    SPLIT_FILE,
    WEIGHTS_FILE,
    BandGapModelError,
    BandGapPrediction,
    CompositionBandGapModel,
    Hyperparameters,
    reduced_formula,
    split_by_composition,
    split_from_formulas,
    train_composition_bandgap,
)

MP20 = Path(__file__).resolve().parents[2] / "registry" / "data" / "sample" / "mp20"


def fcc(a: float, *species: str) -> Structure:
    """Primitive fcc cell; a second species at (1/2, 1/2, 1/2) makes rock salt."""
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(lattice, list(species), [[0, 0, 0], [0.5, 0.5, 0.5]][:len(species)])


@pytest.fixture(scope="module")
def shipped() -> CompositionBandGapModel:
    return CompositionBandGapModel.load()


@pytest.fixture(scope="module")
def heldout() -> CompositionBandGapModel:
    return CompositionBandGapModel.load(HELDOUT_MODEL)


def test_shipped_model_loads_and_passes_its_check(shipped):
    rows = shipped.check()
    assert {label for label, _, _ in rows} >= {"MgO", "LiF", "Cu", "Al"} | {f for f, _ in CHECK_OXIDES}
    assert shipped.version.startswith("comp-attention-") and len(shipped.version) == len("comp-attention-") + 12
    assert shipped.card["weights_sha256"].startswith(shipped.version.rsplit("-", 1)[1])
    assert CompositionBandGapModel.load() is shipped  # loaded once per process
    assert torch.load(SHIPPED_MODEL / WEIGHTS_FILE, weights_only=True)  # a plain state_dict


def test_the_shipped_deploy_model_quotes_the_held_out_runs_metrics_and_trained_on_everything(shipped, heldout):
    card, theirs = shipped.card, heldout.card
    assert card["weights_sha256"] != theirs["weights_sha256"]
    # its metrics are the held-out run's, and say so: real skill on compositions that run never saw
    assert card["metrics"]["metrics_source"].startswith(f"heldout/ ({heldout.version}: same recipe")
    assert {k: v for k, v in card["metrics"].items() if k != "metrics_source"} == theirs["metrics"]
    assert card["metrics"]["test"]["mae"] <= 0.7 * card["metrics"]["baseline_train_mean"]["mae"]
    # trained on every row, validation and test formulas of the held-out run included, for that run's best epoch
    counts = card["data"]["counts"]
    assert counts["val"]["rows"] == counts["test"]["rows"] == 0
    assert counts["train"]["rows"] == sum(c["rows"] for c in theirs["data"]["counts"].values())
    assert card["hyperparameters"]["epochs"] == card["training"]["epochs_run"] == theirs["training"]["best_epoch"]
    assert not (SHIPPED_MODEL / SPLIT_FILE).exists() and not shipped.held_out_formulas()
    assert card["deploy"]["train_in_sample"]["n"] == counts["train"]["rows"]


def test_the_held_out_model_keeps_its_split_and_is_not_held_to_oxides_it_never_saw(heldout):
    held_out = heldout.held_out_formulas()
    assert {f for f, _ in CHECK_OXIDES} <= set(json.loads((HELDOUT_MODEL / SPLIT_FILE).read_text())["test"])
    rows = {label: got for label, _, got in heldout.check()}  # passes, reporting what it predicts for them
    assert all(f in held_out and rows[f] is not None for f, _ in CHECK_OXIDES)
    assert heldout.card["metrics"]["test"]["mae"] <= 0.7 * heldout.card["metrics"]["baseline_train_mean"]["mae"]


def test_mgo_is_predicted_well_above_cu(shipped):
    mgo, cu = shipped.predict([fcc(4.25, "Mg", "O"), fcc(3.62, "Cu")])
    assert mgo > 3.0 and cu < 0.5
    # the composition is all it reads: a formula gives the same number as the structure
    assert shipped.predict_formulas(["MgO"])[0].band_gap == pytest.approx(mgo)


def test_an_element_the_model_never_saw_gives_none_with_a_reason(shipped):
    helium, mgo = shipped.predict_with_reasons([fcc(4.2, "He"), fcc(4.25, "Mg", "O")])
    assert isinstance(helium, BandGapPrediction) and helium.band_gap is None
    assert "He" in helium.reason and "not covered" in helium.reason
    assert mgo.band_gap is not None and mgo.reason is None  # one bad input does not fail the others
    assert shipped.predict(["MgO"]) == [None]  # a string is not a structure: use predict_formulas


def test_a_folder_whose_weights_were_altered_is_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    weights = bytearray((folder / WEIGHTS_FILE).read_bytes())
    weights[-100] ^= 0xFF
    (folder / WEIGHTS_FILE).write_bytes(bytes(weights))
    with pytest.raises(BandGapModelError, match="differs from the card"):
        CompositionBandGapModel.load(folder)


def test_a_folder_without_a_card_is_refused(tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(SHIPPED_MODEL, folder)
    (folder / CARD_FILE).unlink()
    with pytest.raises(BandGapModelError, match="has no model_card.json"):
        CompositionBandGapModel.load(folder)


def test_a_tiny_training_run_writes_a_folder_that_loads_and_splits_by_composition(tmp_path):
    with open(MP20 / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:400]
    formulas = [r["pretty_formula"] for r in rows] + ["Fe2O3", "Fe4O6", "O3Fe2"]  # one composition, three spellings
    gaps = [float(r["band_gap"]) for r in rows] + [2.0, 2.1, 2.2]
    holdout = ["MgO", rows[0]["pretty_formula"]]
    out = tmp_path / "tiny"
    card = train_composition_bandgap(
        formulas, gaps, out, seed=1, holdout_formulas=holdout, threads=1, progress=False,
        hyperparameters=Hyperparameters(d_model=16, n_layers=1, n_heads=2, d_ff=32, epochs=2, batch_size=64))

    split = json.loads((out / SPLIT_FILE).read_text())
    assert split["test"] == split_by_composition(formulas, seed=1, holdout_formulas=holdout)["test"]
    train = {reduced_formula(f) for f in formulas} - set(split["val"]) - set(split["test"]) - {"MgO", reduced_formula(
        holdout[1])}
    assert not train & set(split["test"]) and not train & set(split["val"]) and not set(split["val"]) & set(split["test"])
    assert reduced_formula(holdout[1]) not in set(split["val"]) | set(split["test"])
    distinct = {reduced_formula(f) for f in formulas}
    assert sum(c["formulas"] for c in card["data"]["counts"].values()) == len(distinct - {"MgO", reduced_formula(
        holdout[1])})
    assert card["data"]["holdout"]["rows_excluded"] == sum(reduced_formula(f) == reduced_formula(holdout[1])
                                                           for f in formulas)
    assert "Reproduce" in (out / "README.md").read_text()

    model = CompositionBandGapModel.load(out, check=False)  # two epochs: loads, predicts, but is no good
    assert model.version == f"comp-attention-{card['weights_sha256'][:12]}"
    assert all(g is None or g >= 0 for g in model.predict([fcc(4.25, "Mg", "O"), fcc(3.62, "Cu")]))
    with pytest.raises(BandGapModelError, match="fails the model check"):
        CompositionBandGapModel.load(out)  # the default check refuses it


def test_a_deploy_run_trains_on_every_row_for_the_held_out_runs_best_epoch(tmp_path):
    with open(MP20 / "train.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))[:300]
    formulas, gaps = [r["pretty_formula"] for r in rows], [float(r["band_gap"]) for r in rows]
    hp = Hyperparameters(d_model=16, n_layers=1, n_heads=2, d_ff=32, epochs=3, batch_size=64)
    evaluated = train_composition_bandgap(formulas, gaps, tmp_path / "heldout", threads=1, progress=False,
                                          hyperparameters=hp)
    (tmp_path / "deploy").mkdir()
    (tmp_path / "deploy" / SPLIT_FILE).write_text("{}")  # a stale split file is removed, not left to misdescribe it
    card = train_composition_bandgap(formulas, gaps, tmp_path / "deploy", threads=1, progress=False,
                                     hyperparameters=hp, train_on_all=True, heldout=tmp_path / "heldout")
    assert card["training"]["epochs_run"] == evaluated["training"]["best_epoch"] and "val_mae" not in card["training"][
        "history"][-1]
    assert card["data"]["counts"]["train"]["formulas"] == len({reduced_formula(f) for f in formulas})
    assert card["metrics"]["metrics_source"].startswith(f"heldout/ ({evaluated['version']}: same recipe")
    assert card["metrics"]["test"] == evaluated["metrics"]["test"]
    assert not (tmp_path / "deploy" / SPLIT_FILE).exists()
    readme = (tmp_path / "deploy" / "README.md").read_text()
    assert "Deploy model" in readme and "in-sample" in readme
    model = CompositionBandGapModel.load(tmp_path / "deploy", check=False)
    assert model.version == card["version"] != evaluated["version"]
    with pytest.raises(ValueError, match="not the recipe"):
        train_composition_bandgap(formulas, gaps, tmp_path / "other", threads=1, progress=False, train_on_all=True,
                                  heldout=tmp_path / "heldout", hyperparameters=Hyperparameters(d_model=32))
    with pytest.raises(ValueError, match="needs `heldout`"):
        train_composition_bandgap(formulas, gaps, tmp_path / "other", threads=1, progress=False, train_on_all=True)


def test_a_split_file_keeps_its_test_formulas_and_trains_on_the_rest():
    formulas = ["MgO", "Mg2O2", "Cu", "TiO2", "NiO", "ZnO", "Fe2O3", "WO3"]
    first = split_by_composition(formulas, seed=0, fractions=(0.5, 0.25, 0.25), holdout_formulas=["TiO2", "NiO"])
    again = split_from_formulas(formulas, first["val"], first["test"])  # the holdout now trained on
    assert again["test"] == first["test"] and again["val"] == first["val"]
    assert {"TiO2", "NiO"} <= set(again["train"]) and not again["holdout"]
    assert sorted(again["train"] + again["val"] + again["test"]) == sorted({reduced_formula(f) for f in formulas})
    with pytest.raises(ValueError, match="two of"):
        split_from_formulas(formulas, ["MgO"], ["MgO"])

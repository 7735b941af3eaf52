import ast
import csv
import json
import math
import shutil
from pathlib import Path

import matgl
import pytest
import torch
from click.testing import CliRunner
from pymatgen.core import Lattice, Structure

import cli.main
from registry.bandgap import (
    CARD_FILE,
    SHIPPED_MODEL,
    BandGapModel,
    BandGapModelError,
    ModelCard,
    files_sha256,
    train_bandgap,
)
from registry.ingest import Ingestor
from registry.readers import read_path
from tests.paths import require

MP20 = Path(__file__).resolve().parents[2] / "registry" / "data" / "sample" / "mp20"
LIGHT = {"Li", "Na", "Mg", "Al", "Si", "O", "F", "S", "Ti", "V", "Mn", "Fe", "Co", "Ni", "Cu", "Zn"}


def fcc(a: float, *species: str) -> Structure:
    """Primitive fcc cell; a second species at (1/2, 1/2, 1/2) makes rock salt."""
    lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
    return Structure(lattice, list(species), [[0, 0, 0], [0.5, 0.5, 0.5]][:len(species)])


@pytest.fixture(scope="module")
def small_csv(tmp_path_factory) -> Path:
    """30 MP-20 rows made of common light and 3d elements, so a 24-structure training split covers its val/test."""
    with open(MP20 / "train.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = [r for r in reader if set(ast.literal_eval(r["elements"])) <= LIGHT][:30]
    path = tmp_path_factory.mktemp("mp20") / "small.csv"
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=reader.fieldnames)
        writer.writeheader()
        writer.writerows(rows)
    return path


@pytest.fixture(scope="module")
def tiny_model(small_csv, tmp_path_factory) -> tuple[Path, ModelCard, list]:
    records = list(read_path(small_csv))
    structures = [r.structure for r in records]
    gaps = [r.reference["band_gap"] for r in records]
    gaps[0] = None  # a structure without a reference gap is dropped and counted, not trained on
    out = tmp_path_factory.mktemp("bandgap")
    card = train_bandgap(structures, gaps, out, epochs=2, batch_size=8, progress=False,
                         ids=[r.origin.source_id for r in records])
    return out, card, structures


def test_card_counts_add_up_and_the_test_split_is_held_out(tiny_model):
    out, card, structures = tiny_model
    counts = card.data["counts"]
    assert card.data["given"] == len(structures) == 30
    assert card.data["dropped"] == {"band gap missing, not finite or negative": 1}
    assert counts["train"] + counts["val"] + counts["test"] == 29
    assert (counts["val"], counts["test"]) == (3, 3)
    assert 0 < counts["val_used"] <= counts["val"] and 0 < counts["test_scored"] <= counts["test"]
    assert len(card.data["test_ids"]) == counts["test"]
    assert card.hyperparameters["epochs_run"] == 2
    assert card.weights_sha256 == files_sha256(out)
    assert {"test_mae", "test_rmse", "baseline_mae_train_mean"} <= set(card.metrics)
    assert json.loads((out / CARD_FILE).read_text())["metrics"] == card.metrics


def test_a_trained_folder_loads_in_matgl_and_here_with_the_same_numbers_in_ev(tiny_model):
    out, card, structures = tiny_model
    model = BandGapModel.load(out, check=False)  # two epochs on 24 structures: not expected to pass the check
    assert model.version == card.version and model.covers(card.elements)
    gaps = model.predict(structures[:8])
    assert all(g is not None and math.isfinite(g) and g >= 0 for g in gaps)
    raw = float(matgl.load_model(out).predict_structure(structures[1]))  # the normalisation is in the weights
    assert max(raw, 0.0) == pytest.approx(gaps[1], abs=1e-4)


def test_the_shipped_model_matches_its_card_and_separates_an_oxide_from_a_metal():
    model = BandGapModel.load()
    assert model.card.weights_sha256 == files_sha256(SHIPPED_MODEL)
    assert model.card.metrics["test_mae"] < model.card.metrics["baseline_mae_train_mean"]
    mgo, cu = model.predict([fcc(4.25, "Mg", "O"), fcc(3.62, "Cu")])
    assert mgo > cu + 1.0
    assert BandGapModel.load() is model  # once per process


def test_uncovered_elements_and_disorder_get_a_reason_and_do_not_fail_the_batch():
    model = BandGapModel.load()
    argon = fcc(5.26, "Ar")
    disordered = fcc(4.25, "Mg", "O")
    disordered.replace_species({"Mg": {"Mg": 0.5, "Ni": 0.5}})
    assert not model.covers(["Ar"])
    preds = model.predict_with_reasons([argon, fcc(4.25, "Mg", "O"), disordered])
    assert preds[0].band_gap is None and "Ar not covered" in preds[0].reason
    assert preds[1].band_gap is not None and preds[1].reason is None
    assert preds[2].band_gap is None and "disordered" in preds[2].reason


def test_a_folder_without_a_card_or_with_changed_weights_is_refused(tiny_model, tmp_path):
    out, _, _ = tiny_model
    folder = shutil.copytree(out, tmp_path / "copy")
    (folder / CARD_FILE).unlink()
    with pytest.raises(BandGapModelError, match="no model_card.json"):
        BandGapModel.load(folder)

    shutil.copy(out / CARD_FILE, folder / CARD_FILE)
    state = torch.load(folder / "state.pt", weights_only=True)
    next(iter(state.values())).add_(1.0)
    torch.save(state, folder / "state.pt")
    with pytest.raises(BandGapModelError, match="do not match the card"):
        BandGapModel.load(folder, check=False)


def test_a_folder_naming_modules_outside_matgl_is_refused_before_import(tiny_model, tmp_path):
    folder = shutil.copytree(tiny_model[0], tmp_path / "crafted")
    args = torch.load(folder / "model.pt", weights_only=True)
    args["bond_expansion"] = {"@module": "os", "@class": "getcwd", "init_args": {}}
    torch.save(args, folder / "model.pt")
    with pytest.raises(BandGapModelError, match="outside matgl"):
        ModelCard.for_folder(folder, name="crafted", notes="")


def test_the_legacy_matgl_bandgap_folder_is_refused_with_a_reason(shared_data):
    legacy = require(shared_data / "matgl_pretrained" / "MEGNet-MP-2019.4.1-BandGap-mfi")
    with pytest.raises(BandGapModelError, match="weights-only loader"):
        ModelCard.for_folder(legacy, name="legacy", notes="")


def test_cli_trains_on_ingested_structures(registry, db_uri, small_csv, tmp_path):
    assert Ingestor(registry).write(read_path(small_csv)).ingested == 30
    out = tmp_path / "model"
    result = CliRunner().invoke(cli.main.cli, ["--db", db_uri, "train", "bandgap", "--epochs", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "30 structures with a finite reference band gap" in result.output
    assert "held-out MAE" in result.output and str(out) in result.output
    card = ModelCard.read(out)
    assert card.data["query"] == {"reference.band_gap": {"$type": "number"}}
    assert set(card.data["test_ids"]) <= {d["registry_id"] for d in registry.find(fields=["registry_id"])}

    again = CliRunner().invoke(cli.main.cli, ["--db", db_uri, "train", "bandgap", "--epochs", "1", "--out", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output

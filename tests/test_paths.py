"""Test data is found through $REGISTRY_SHARED_DATA or ../shared/data beside the checkout, never a machine's path."""

from pathlib import Path

import pytest

from tests import paths


def test_the_variable_names_the_shared_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGISTRY_SHARED_DATA", str(tmp_path))
    assert paths.shared_root() == tmp_path


def test_else_the_folder_beside_the_checkout_and_nothing_else(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("REGISTRY_SHARED_DATA", raising=False)
    monkeypatch.setattr(paths, "ROOT", tmp_path / "checkout")
    assert paths.shared_root() is None  # wherever this machine keeps its own copy
    (tmp_path / "shared" / "data").mkdir(parents=True)
    assert paths.shared_root() == tmp_path / "shared" / "data"

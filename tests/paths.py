"""Where test data lives: $REGISTRY_SHARED_DATA or ../shared/data next to the repository when present, else the
copies shipped in the repo.

The shared folder holds a few things the repository does not ship (the paper's eval_gen.pt, legacy matgl
weights); tests that need those call `require` and are skipped, with the reason, where they are absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "registry" / "data" / "sample"
# shared-data folder name -> the shipped copy of (part of) it
SHIPPED = {"mp20_sample": SAMPLE / "mp20", "tunnel_references": SAMPLE / "tunnel_references",
           "gaibm_2410.06433": SAMPLE / "cdvae", "matbench_discovery": ROOT / "registry" / "data" / "references"}


def shared_root() -> Path | None:
    """$REGISTRY_SHARED_DATA, else ../shared/data beside the repository; None when neither is a folder."""
    for candidate in (os.environ.get("REGISTRY_SHARED_DATA"), ROOT.parent / "shared" / "data"):
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return None


def require(path: Path) -> Path:
    """`path`, or skip the test saying what is missing."""
    if not path.exists():
        pytest.skip(f"{path} is not here (it is in ../shared/data, which this checkout lacks)")
    return path

"""`registry serve` on a small built registry: the community's validator passes it, OPTIMADE clients query it with
the registry's own properties, and Ctrl-C stops it cleanly."""

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from optimade.client import OptimadeClient
from pymatgen.core import Lattice, Structure

from builders.chain import make_builder
from builders.run import run_builder
from registry import __version__
from registry.output.sets import create_set

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(uri: str, log: Path) -> tuple[subprocess.Popen, str]:
    """`registry serve` in its own process (its output to `log`: a pipe nobody reads would fill), once it answers."""
    port = free_port()
    with log.open("w") as out:
        proc = subprocess.Popen([sys.executable, "-m", "cli", "--db", uri, "serve", "--port", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            requests.get(f"{url}/v1/info", timeout=5)
            return proc, url
        except requests.RequestException:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"registry serve did not come up:\n{log.read_text()}")


@pytest.fixture(scope="module")
def api(seeded_registry, tmp_path_factory) -> Iterator[tuple[str, dict[str, str], subprocess.Popen, Path]]:
    """The seeded registry with a set and a structure the OPTIMADE adapter cannot map (a disordered site, as a
    bundle could bring), served."""
    reg, ids = seeded_registry
    [doc] = reg.find({"registry_id": ids["VO2"]}, fields=["origin", "formula_pretty", "chemsys", "last_updated"])
    disordered = Structure(Lattice.cubic(4.2), [{"Mg": 0.5, "Ni": 0.5}, "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    reg.collection("structures").insert_one({**doc, "registry_id": "reg-disordered", "structure": disordered.as_dict()})
    create_set(reg, "demo-top", {"registry_id": {"$in": [ids["VO2"], ids["TiVO4"]]}})
    run_builder(make_builder(reg, "optimade"), "optimade", progress=False)
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    proc, url = start(reg.uri, log)
    yield url, ids, proc, log
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_the_optimade_validator_passes(api):
    url, *_ = api
    validator = subprocess.run([str(BIN / "optimade-validator"), "--json", f"{url}/v1"], capture_output=True, text=True,
                               timeout=120)
    assert validator.stdout, validator.stderr
    report = json.loads(validator.stdout)
    assert report["failure_count"] == 0 and report["internal_failure_count"] == 0, json.dumps(report, indent=1)
    # an optional check may say /references is empty: the registry serves no bibliographic references
    optional = json.dumps(report["optional_failure_messages"], indent=1)
    assert report["optional_failure_count"] == 0 or (report["optional_failure_count"] == 1
                                                     and "Query references" in optional), optional


def test_info_names_the_provider_and_the_registry_version(api):
    url, *_ = api
    meta = requests.get(f"{url}/v1/info", timeout=10).json()["meta"]
    assert meta["provider"]["prefix"] == "tmo" and meta["provider"]["name"] == "tmo-registry"
    assert meta["implementation"]["version"] == __version__ and __version__ in meta["provider"]["description"]
    properties = requests.get(f"{url}/v1/info/structures", timeout=10).json()["data"]["properties"]
    assert properties["_tmo_e_above_hull"]["unit"] == "eV/atom" and properties["_tmo_sets"]["type"] == "list"


def test_clients_filter_on_elements_and_on_the_registry_properties(api):
    url, ids, *_ = api
    client = OptimadeClient(base_urls=[url], use_async=False, silent=True)

    def found(filter: str) -> set[str]:
        return {d["id"] for d in client.get(filter=filter)["structures"][filter][url]["data"]}

    assert found('elements HAS ALL "Mn","O"') == {ids["beta-MnO2"]}
    assert found('_tmo_sets HAS "demo-top"') == {ids["VO2"], ids["TiVO4"]}
    assert found('elements HAS "V" AND _tmo_band_gap < 0.5 AND _tmo_channel_dimensionality_mg = 1') == {ids["VO2"]}


def test_what_the_stage_could_not_map_is_not_served(api, seeded_registry):
    reg, _ = seeded_registry
    [failed] = reg.find({"state": "failed"}, collection="optimade_structures")
    assert "ordered structures" in failed["error"]  # optimade's adapter maps ordered sites only
    url, *_ = api
    body = requests.get(f"{url}/v1/structures", params={"page_limit": 100}, timeout=10).json()
    served = {d["id"] for d in body["data"]}
    assert failed["registry_id"] not in served and len(served) == body["meta"]["data_returned"] == reg.count() - 1


def test_a_filter_the_grammar_rejects_gets_an_optimade_error(api):
    url, *_ = api
    response = requests.get(f"{url}/v1/structures", params={"filter": 'elements HAS ALLL "Mn"'}, timeout=10)
    assert response.status_code == 400
    [error] = response.json()["errors"]
    assert error["status"] == "400" and "Unable to parse filter" in error["detail"]
    assert "Traceback" not in response.text


def test_ctrl_c_stops_it_cleanly(api):  # last: it stops the module's server
    *_, proc, log = api
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 0, log.read_text()
    output = log.read_text()
    assert "Application shutdown complete" in output and output.rstrip().endswith("stopped")

import subprocess
import sys

import pymongo

from registry.db.server import EmbeddedServer


def _start(home):
    code = ("import sys; from registry.db.server import EmbeddedServer; "
            "print(EmbeddedServer(sys.argv[1]).ensure_running(auth=False).port)")
    return subprocess.Popen([sys.executable, "-c", code, str(home)], stdout=subprocess.PIPE, text=True)


def test_two_commands_starting_at_once_share_one_server(tmp_path):
    procs = [_start(tmp_path), _start(tmp_path)]
    ports = {p.communicate(timeout=120)[0].strip() for p in procs}
    server = EmbeddedServer(tmp_path)
    try:
        assert all(p.returncode == 0 for p in procs)
        assert len(ports) == 1, f"two servers were started: {ports}"
        state = server.status()
        assert state is not None and str(state.port) in ports
        client = pymongo.MongoClient(state.uri, serverSelectionTimeoutMS=5000)
        client.t.c.insert_one({"x": 1})
        assert client.t.c.count_documents({}) == 1
    finally:
        assert server.stop() is True
    assert server.status() is None
    assert server.stop() is False


def test_data_survives_a_restart(tmp_path):
    server = EmbeddedServer(tmp_path)
    uri = server.ensure_running(auth=False).uri
    pymongo.MongoClient(uri).t.c.insert_one({"kept": True})
    server.stop()
    uri = server.ensure_running(auth=False).uri
    try:
        assert pymongo.MongoClient(uri).t.c.find_one({"kept": True}) is not None
    finally:
        server.stop()

"""Security: authentication on the embedded server, a read-only user, credentials that never show, TLS options
that reach pymongo (and a real TLS handshake), and model or data loading that never runs code from a file."""

from __future__ import annotations

import ast
import datetime as dt
import hashlib
import ipaddress
import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mongoengine
import pymongo
import pytest
from bson.regex import Regex
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pymongo.errors import OperationFailure

from cli.main import cli
from registry.db.client import Registry
from registry.db.config import Settings
from registry.db.guard import check_filter
from registry.db.server import USERS, EmbeddedServer
from registry.errors import DatabaseUnavailable, RegistryError
from registry.io.dft import read_results
from registry.io.readers import read_path
from registry.output.bundle import BundleError, export_set, import_bundle
from registry.output.sets import create_set
from tests.reliability.harness import ROOT, error_lines, start_daemon

SAMPLE_CIFS = ROOT / "registry" / "data" / "sample" / "tunnel_references"
SOURCE_TREES = ("registry", "builders", "generators", "cli", "schemas", "bench")


# --- authentication ---

def invoke(*args: str, env: dict[str, str | None]):
    """`registry ARGS` in this process with exactly these REGISTRY_* settings."""
    unset = dict.fromkeys(("REGISTRY_DB", "REGISTRY_HOME", "REGISTRY_USERNAME", "REGISTRY_PASSWORD"))
    return CliRunner().invoke(cli, list(args), env={**unset, "REGISTRY_TIMEOUT_MS": "3000", **env})


@pytest.fixture(scope="module")
def auth_home(tmp_path_factory):
    """A home started with a plain `registry db start` (private by default), holding the four sample CIFs."""
    home = tmp_path_factory.mktemp("auth") / "home"
    env = {"REGISTRY_HOME": str(home)}
    started = invoke("db", "start", env=env)
    assert started.exit_code == 0, started.output
    assert invoke("ingest", str(SAMPLE_CIFS), env=env).exit_code == 0
    yield home, env, started
    mongoengine.disconnect_all()  # an open connection can stall the server's shutdown
    EmbeddedServer(home).stop()


def passwords(home: Path) -> dict[str, str]:
    return {role: user["password"] for role, user in json.loads((home / "credentials.json").read_text()).items()}


def as_reader(home: Path, env: dict) -> dict:
    return {**env, "REGISTRY_USERNAME": USERS["reader"][0], "REGISTRY_PASSWORD": passwords(home)["reader"]}


def assert_no_secret(home: Path, *texts: str) -> None:
    for secret in passwords(home).values():
        for text in texts:
            assert secret not in text


def modes(home: Path) -> set[tuple[str, int]]:
    """The permission bits of the home and everything in it, as (kind, mode)."""
    return {("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)) for p in (home, *home.rglob("*"))}


def test_db_start_creates_users_and_says_where_their_passwords_are(auth_home):
    home, env, started = auth_home
    assert "credentials.json (mode 0600)" in started.stdout
    assert modes(home) == {("dir", 0o700), ("file", 0o600)}
    status = invoke("db", "status", env=env)
    assert "authentication required" in status.stdout
    assert_no_secret(home, started.output, status.output,
                     (home / "server.json").read_text(), (home / "server.log").read_text(errors="replace"))


def test_without_credentials_nothing_can_be_read_or_written(auth_home):
    home, _, _ = auth_home
    with pymongo.MongoClient(EmbeddedServer(home).status().uri, serverSelectionTimeoutMS=3000) as client:
        for attempt in (lambda: client.registry.structures.find_one(), lambda: client.registry.x.insert_one({})):
            with pytest.raises(OperationFailure) as exc:
                attempt()
            assert exc.value.code == 13  # Unauthorized


def test_the_owner_of_the_home_works_as_admin_without_typing_a_password(auth_home):
    home, env, _ = auth_home
    stats = invoke("stats", env=env)
    assert stats.exit_code == 0 and "structures" in stats.stdout


@pytest.mark.parametrize("args", [
    ("ingest", str(SAMPLE_CIFS)),
    ("build", "validate", "--top", "0"),
    ("sets", "create", "mine"),
    ("generate", "cdvae", str(ROOT / "registry" / "data" / "sample" / "cdvae" / "eval_gen_arrays.npz"),
     "--limit", "2"),
], ids=["ingest", "build", "sets", "generate"])
def test_a_read_only_user_can_query_but_every_write_fails_with_one_line(auth_home, args):
    home, env, _ = auth_home
    reader = as_reader(home, env)
    query = invoke("query", "{}", "--format", "csv", "--fields", "formula_pretty", env=reader)
    assert query.exit_code == 0 and len(query.stdout.splitlines()) == 1 + 4
    write = invoke(*args, env=reader)
    assert write.exit_code == 2, write.output
    [line] = error_lines(write.stderr)
    assert "not authorized" in line
    assert_no_secret(home, write.output)
    assert len(Registry(home=home).find()) == 4


def test_credentials_in_the_uri_work_and_never_show(auth_home):
    home, env, _ = auth_home
    uri = EmbeddedServer(home).status().uri.replace("//", f"//{USERS['reader'][0]}:{passwords(home)['reader']}@")
    outputs = [invoke("--db", uri, *args, env={}) for args in (("db", "status"), ("stats",),
                                                                ("ingest", str(SAMPLE_CIFS)))]
    assert [o.exit_code for o in outputs] == [0, 0, 2]
    wrong = invoke("--db", uri.replace(passwords(home)["reader"], "not-the-password"), "stats", env={})
    assert wrong.exit_code == 2 and "authentication failed" in wrong.stderr and "not-the-password" not in wrong.output
    assert_no_secret(home, *(o.output for o in outputs), repr(Settings.resolve(db=uri)))


def test_reports_and_bundles_never_carry_credentials(auth_home, tmp_path):
    home, env, _ = auth_home
    report = invoke("report", str(tmp_path / "report.html"), env=env)
    assert report.exit_code == 0, report.output
    reg = Registry(home=home)
    create_set(reg, "leak-check", {})
    export_set(reg, "leak-check", tmp_path / "bundle")
    reg.client.close()
    mongoengine.disconnect_all()  # an open connection can stall the server's shutdown
    files = [tmp_path / "report.html", *(tmp_path / "bundle").rglob("*.*")]
    assert_no_secret(home, *(f.read_text(errors="replace") for f in files))
    assert EmbeddedServer(home).credentials("admin").password not in repr(EmbeddedServer(home).credentials("admin"))


def test_an_open_home_is_refused_until_db_secure_and_keeps_its_data(tmp_path):
    """A home made before authentication was the default (here: started with auth=False, its files left 0755
    and 0644 as an older registry did) is refused with one line; `registry db secure` upgrades it in place."""
    home = tmp_path / "home"
    server = EmbeddedServer(home)
    with pymongo.MongoClient(server.ensure_running(auth=False).uri) as client:
        client.registry.structures.insert_one({"registry_id": "kept"})
    server.stop()
    home.chmod(0o755)
    (home / "server.log").chmod(0o644)
    env = {"REGISTRY_HOME": str(home)}
    refused = invoke("stats", env=env)
    assert refused.exit_code == 2
    [line] = error_lines(refused.stderr)
    assert "is open" in line and "registry db secure" in line
    secured = invoke("db", "secure", env=env)
    assert secured.exit_code == 0 and "authentication required" in secured.stdout, secured.output
    assert modes(home) == {("dir", 0o700), ("file", 0o600)}
    assert Registry(home=home).find(fields=["registry_id"]) == [{"registry_id": "kept"}]
    assert invoke("db", "secure", env=env).exit_code == 0  # idempotent
    server.stop()
    assert server.ensure_running().auth, "a home once secured never starts without authentication"
    assert server.ensure_running(auth=False).auth
    with pymongo.MongoClient(server.status().uri, serverSelectionTimeoutMS=3000) as client:
        with pytest.raises(OperationFailure):
            client.registry.structures.find_one()
    server.stop()  # with no client connected: SecantusDB can stall its shutdown while one is


def test_two_commands_starting_a_new_home_at_once_secure_it_once(tmp_path):
    code = ("import sys; from registry.db.client import Registry; r = Registry(home=sys.argv[1]); "
            "r.collection('c').insert_one({}); print(r.uri)")
    procs = [subprocess.Popen([sys.executable, "-c", code, str(tmp_path / "home")], stdout=subprocess.PIPE,
                              text=True, cwd=ROOT) for _ in range(2)]
    uris = {p.communicate(timeout=180)[0].strip() for p in procs}
    server = EmbeddedServer(tmp_path / "home")
    try:
        assert [p.returncode for p in procs] == [0, 0] and len(uris) == 1
        assert Registry(home=tmp_path / "home").count(collection="c") == 2
    finally:
        server.stop()


def _meddling(what: str):
    """What another local user could do in the moment SecantusDB needs to create users without authentication."""
    def meddle(client: pymongo.MongoClient) -> None:
        if what == "planted document":
            client.registry.structures.insert_one({"registry_id": "planted", "e_above_hull": -9.99})
        elif what == "reader made root":
            client.admin.command("updateUser", USERS["reader"][0], roles=[{"role": "root", "db": "admin"}])
        elif what == "extra user":
            client.admin.command("createUser", "intruder", pwd="x", roles=[{"role": "root", "db": "admin"}])
        elif what == "password changed":
            client.admin.command("updateUser", USERS["admin"][0], pwd="known-to-the-intruder")
    return meddle


@pytest.mark.parametrize("what", ["planted document", "reader made root", "extra user", "password changed"])
def test_the_set_up_race_is_detected_and_refused(tmp_path, monkeypatch, what):
    """Users are created on a server that accepts anyone for a moment: whatever someone else does then is found
    on the authenticated server afterwards, and the start is refused with no credentials kept."""
    create_users = EmbeddedServer._create_users

    def create_then_meddle(self, client, users):
        create_users(self, client, users)
        _meddling(what)(client)

    monkeypatch.setattr(EmbeddedServer, "_create_users", create_then_meddle)
    server = EmbeddedServer(tmp_path / "home")
    with pytest.raises(DatabaseUnavailable, match="refused to secure") as refused:
        server.ensure_running()
    assert "\n" not in str(refused.value)
    assert not server.credentials_file.exists() and server.status() is None


ATTACKER = """
import json, os, sys
import pymongo
home, port = sys.argv[1], int(sys.argv[2])
seen = {}
for name in ("", "credentials.json", "server.json", "server.log", "db/WiredTiger.wt"):
    try:
        os.listdir(home) if not name else open(os.path.join(home, name), "rb").read(1)
        seen[name or "listing"] = "read"
    except PermissionError:
        seen[name or "listing"] = "denied"
client = pymongo.MongoClient(f"mongodb://127.0.0.1:{port}/", serverSelectionTimeoutMS=3000)
for what, attempt in (("find", lambda: client.registry.structures.find_one()),
                      ("insert", lambda: client.registry.structures.insert_one({"planted": True}))):
    try:
        attempt()
        seen[what] = "done"
    except pymongo.errors.OperationFailure as exc:
        seen[what] = exc.code
print(json.dumps(seen))
"""


def as_nobody(*args: str, **env: str) -> subprocess.CompletedProcess:
    env.update(PATH="/usr/bin:/bin", PYTHONPATH=str(ROOT), HOME="/tmp", PYTHONDONTWRITEBYTECODE="1")
    return subprocess.run(["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", sys.executable, *args],
                          capture_output=True, text=True, env=env, timeout=120, cwd="/tmp")


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_another_unix_user_can_neither_read_nor_query_a_default_registry():
    """As `nobody`, knowing the home and the port (both can be found): no file can be read, the database refuses
    every command, and `registry` says in one line whose home it is. The same attacker reads an open server, so
    the test can fail."""
    parent = Path(tempfile.mkdtemp(prefix="registry-shared-"))
    parent.chmod(0o755)  # a folder everyone can enter, as a home under a project folder usually is
    private, open_ = EmbeddedServer(parent / "private"), EmbeddedServer(parent / "open")
    try:
        state = private.ensure_running()
        attack = as_nobody("-c", ATTACKER, str(private.home), str(state.port))
        assert json.loads(attack.stdout) == {"listing": "denied", "credentials.json": "denied",
                                             "server.json": "denied", "server.log": "denied",
                                             "db/WiredTiger.wt": "denied", "find": 13, "insert": 13}, attack.stderr
        command = as_nobody("-m", "cli", "stats", REGISTRY_HOME=str(private.home))
        assert command.returncode == 2
        [line] = error_lines(command.stderr)
        assert "belongs to another user" in line
        assert Registry(home=private.home).count({"planted": True}) == 0

        opened = open_.ensure_running(auth=False)
        control = json.loads(as_nobody("-c", ATTACKER, str(open_.home), str(opened.port)).stdout)
        assert control["find"] == "done" and control["insert"] == "done"
    finally:
        private.stop()
        open_.stop()
        shutil.rmtree(parent)


# --- bounded queries, and error paths that must stay one line ---

def one_error_line(result) -> str:
    """The single error line of a refused command, which must not be a traceback (click's usage errors add their
    usage lines above it)."""
    assert isinstance(result.exception, SystemExit) and result.exit_code in (1, 2), result.output
    [line] = [line for line in error_lines(result.stderr) if line.lower().startswith("error:")]
    return line


@pytest.mark.parametrize("pattern", ["(A+)+B", "(A*)*B", "(a|aa)+$", "((ab)*)+", "(?:x+){2,}", "(\\d+)*$"])
def test_a_backtracking_regex_is_refused(pattern):
    with pytest.raises(RegistryError, match="refused"):
        check_filter({"$or": [{"raw": {"$regex": pattern}}]})
    with pytest.raises(RegistryError, match="refused"):
        check_filter({"raw": {"$in": [Regex(pattern)]}})


@pytest.mark.parametrize("pattern", ["^Mn", "A+B", "(AB)+", "[(+]+x", "\\(a+\\)+", "(a|b)?", "^run:[0-9]+$", "a{2,}b+"])
def test_an_ordinary_regex_passes(pattern):
    check_filter({"raw": {"$regex": pattern}, "formula_pretty": Regex(pattern)})


def test_the_pathological_query_is_refused_before_it_reaches_the_server(db_uri):
    """`(A+)+B` on 30 A's holds SecantusDB for over a minute (every client waits; maxTimeMS does not stop one
    match: measured, docs/security.md), so it must never be sent."""
    Registry(db_uri).collection("rejects").insert_one({"raw": "A" * 30})
    started = time.monotonic()
    result = invoke("--db", db_uri, "query", '{"raw": {"$regex": "(A+)+B"}}', "-c", "rejects", env={})
    assert "nested quantifiers" in one_error_line(result)
    with pymongo.MongoClient(db_uri, serverSelectionTimeoutMS=2000) as client:
        client.admin.command("ping")
    assert time.monotonic() - started < 30


def test_a_long_query_is_stopped_by_the_server_time_limit(db_uri):
    Registry(db_uri).collection("structures").insert_many([{"registry_id": str(i), "x": "y" * 200}
                                                           for i in range(20_000)])
    result = invoke("--db", db_uri, "query", '{"x": {"$regex": "z"}}', "--limit", "0",
                    env={"REGISTRY_QUERY_TIMEOUT_MS": "50"})
    assert result.exit_code == 2 and "ran past 50 ms" in one_error_line(result)
    assert invoke("--db", db_uri, "query", '{"x": {"$regex": "z"}}', env={}).exit_code == 0  # default: 5 s


@pytest.mark.parametrize("args", [
    ("query", '{"a":' * 10_000 + "1" + "}" * 10_000),
    ("query", '{"a":' * 150 + "1" + "}" * 150),
    ("query", "{}", "--limit", "1e20"),
    ("query", "{}", "--limit", str(10**20)),
], ids=["10000 levels", "150 levels", "limit 1e20", "limit 10**20"])
def test_a_hostile_query_is_one_line(db_uri, args):
    one_error_line(invoke("--db", db_uri, *args, env={}))


@pytest.mark.parametrize("uri", [
    "MongoDB://alice:s3cretpw@localhost/", "mongodb:/alice:s3cretpw@localhost/", "http://alice:s3cretpw@localhost/",
    "mongodb://al@ice:s3c@retpw@localhost/", "mongodb://alice:s3c/retpw@localhost/",
    "mongodb://alice:s3cretpw@localhost:99999/", "mongodb://alice:s3cretpw@localhost/?readPreference=bogus",
])
def test_a_malformed_uri_is_one_line_exit_2_that_never_shows_the_password(uri):
    result = invoke("--db", uri, "stats", env={})
    line = one_error_line(result)
    assert result.exit_code == 2 and line.startswith("error: bad database URI")
    for secret in ("s3cretpw", "s3c", "retpw", "alice"):
        assert secret not in result.output


# --- TLS ---

def test_tls_options_from_the_environment_reach_every_client(monkeypatch, tmp_path):
    ca = tmp_path / "ca.pem"
    ca.write_text("not read until a connection is made")
    monkeypatch.setenv("REGISTRY_TLS", "true")
    monkeypatch.setenv("REGISTRY_TLS_CA_FILE", str(ca))
    monkeypatch.setenv("REGISTRY_TLS_CERTIFICATE_KEY_FILE", str(tmp_path / "client.pem"))
    monkeypatch.setenv("REGISTRY_USERNAME", "alice")
    monkeypatch.setenv("REGISTRY_PASSWORD", "s3cret")
    reg = Registry("mongodb://db.example.org:27017/reg")
    expected = {"tls": True, "tlsCAFile": str(ca), "tlsCertificateKeyFile": str(tmp_path / "client.pem"),
                "username": "alice", "password": "s3cret"}
    assert expected.items() <= reg.client_options().items()
    assert expected.items() <= reg.store("structures").mongoclient_kwargs.items()
    assert "s3cret" not in repr(reg) + repr(reg.settings)


def _self_signed(folder: Path, name: str) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = folder / f"{name}.pem", folder / f"{name}.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_a_real_tls_handshake_with_a_self_signed_server(monkeypatch, tmp_path):
    cert, key = _self_signed(tmp_path, "server")
    other, _ = _self_signed(tmp_path, "stranger")
    daemon = start_daemon(tmp_path / "db", "--tls-cert-file", str(cert), "--tls-key-file", str(key))
    try:
        monkeypatch.setenv("REGISTRY_TIMEOUT_MS", "2000")
        via_uri = Registry(f"{daemon.uri}tls?tls=true&tlsCAFile={cert}")
        via_uri.collection("structures").insert_one({"registry_id": "x"})
        monkeypatch.setenv("REGISTRY_TLS", "true")
        monkeypatch.setenv("REGISTRY_TLS_CA_FILE", str(cert))
        reg = Registry(f"{daemon.uri}tls")
        reg.ping()
        assert reg.count() == 1

        monkeypatch.setenv("REGISTRY_TLS_CA_FILE", str(other))  # a server this CA did not sign
        with pytest.raises(DatabaseUnavailable, match="cannot reach"):
            Registry(f"{daemon.uri}tls").ping()
        monkeypatch.delenv("REGISTRY_TLS")
        monkeypatch.delenv("REGISTRY_TLS_CA_FILE")
        with pytest.raises(DatabaseUnavailable):  # plaintext to a TLS server
            Registry(f"{daemon.uri}tls").ping()
    finally:
        daemon.stop()


# --- loading never runs code from a file ---

def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            yield node, ast.unparse(node.func)


def _keyword(call: ast.Call, name: str):
    return next((k.value.value for k in call.keywords if k.arg == name and isinstance(k.value, ast.Constant)), None)


def unsafe_loading() -> list[str]:
    """Every call in the source tree that could run code from a file or a downloaded model."""
    found = []
    for tree_name in SOURCE_TREES:
        for path in sorted((ROOT / tree_name).rglob("*.py")):
            text = path.read_text()
            where = path.relative_to(ROOT)
            for call, name in _calls(ast.parse(text)):
                line = f"{where}:{call.lineno}: {name}"
                if name == "torch.load" and _keyword(call, "weights_only") is not True:
                    found.append(f"{line} without weights_only=True")
                elif name in ("pickle.load", "pickle.loads", "dill.load", "cloudpickle.load", "joblib.load",
                              "yaml.load", "yaml.unsafe_load", "eval", "exec"):
                    found.append(line)
                elif name.endswith("load") and name.startswith(("np.", "numpy.")) and _keyword(call, "allow_pickle"):
                    found.append(f"{line} with allow_pickle=True")
                elif _keyword(call, "trust_remote_code") is True:
                    found.append(f"{line} with trust_remote_code=True")
                elif name.endswith("MontyDecoder") and where != Path("registry/io/decoding.py"):
                    found.append(f"{line}: decode untrusted JSON with registry.io.decoding.decode")
                elif name == "matgl.load_model" and not re.search(r"check_modules\(|_module_references\(", text):
                    found.append(f"{line}: matgl imports every @module its files name; check them first")
    return found


def test_no_loader_in_the_source_tree_can_run_code_from_a_file():
    assert unsafe_loading() == []


def test_the_scan_finds_what_it_looks_for(tmp_path, monkeypatch):
    """The scan itself can fail: a tree with each forbidden call is reported call by call."""
    bad = tmp_path / "registry" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import torch, pickle, monty.json, matgl\ntorch.load('m.pt')\npickle.loads(b'')\n"
                   "AutoModel.from_pretrained('x', trust_remote_code=True)\nmonty.json.MontyDecoder()\n"
                   "matgl.load_model('folder')\n")
    monkeypatch.setattr(f"{__name__}.ROOT", tmp_path)
    assert [f.split(": ", 1)[0] for f in unsafe_loading()] == [f"registry/bad.py:{n}" for n in (2, 3, 4, 5, 6)]


@pytest.fixture
def marker_module(tmp_path, monkeypatch) -> Path:
    """An importable module that leaves a file behind when it is imported: proof that code ran."""
    (tmp_path / "leave_a_mark.py").write_text(f"open({str(tmp_path / 'RAN')!r}, 'w').close()\n"
                                              "class Anything:\n    @classmethod\n    def from_dict(cls, d):\n"
                                              "        return cls()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path / "RAN"


def _entry_naming(module: str) -> dict:
    from pymatgen.core import Lattice, Structure
    from pymatgen.entries.computed_entries import ComputedStructureEntry

    entry = ComputedStructureEntry(Structure(Lattice.cubic(4.2), ["Mg", "O"], [[0, 0, 0], [0.5] * 3]), -10.0)
    d = entry.as_dict()
    d["data"] = {"note": {"@module": module, "@class": "Anything"}}
    return d


def test_structure_json_naming_a_module_is_refused_without_importing_it(tmp_path, marker_module):
    (tmp_path / "entry.json").write_text(json.dumps(_entry_naming("leave_a_mark")))
    [record] = list(read_path(tmp_path / "entry.json"))
    assert record.structure is None and "leave_a_mark" in record.reason
    [result] = read_results(tmp_path / "entry.json")
    assert result.entry is None and "leave_a_mark" in result.error
    assert not marker_module.exists()


def test_a_bundle_naming_a_module_is_refused_without_importing_it(seeded, registry, tmp_path, marker_module):
    source, ids = seeded
    create_set(source, "hostile", {}, top=1)
    export_set(source, "hostile", tmp_path / "b")
    [doc_path] = (tmp_path / "b" / "documents").glob("*.json")
    doc = json.loads(doc_path.read_text())
    doc["documents"]["structures"][0]["structure"]["sites"][0]["properties"] = {
        "x": {"@module": "leave_a_mark", "@class": "Anything"}}
    doc_path.write_text(json.dumps(doc))
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    for entry in manifest["files"]:  # a consistent bundle: the checksums match the hostile content
        data = (tmp_path / "b" / entry["path"]).read_bytes()
        entry.update(sha256=hashlib.sha256(data).hexdigest(), bytes=len(data))
    (tmp_path / "b" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="leave_a_mark"):
        import_bundle(registry, tmp_path / "b")
    assert not marker_module.exists()

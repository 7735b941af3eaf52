"""The embedded database: a SecantusDB server (`secantusd-py`) run as its own process under REGISTRY_HOME.

It is started, never imported: SecantusDB is GPL-2.0 and talks to us only over the MongoDB wire protocol, like any
MongoDB server. Its WiredTiger storage takes an exclusive lock, so one server per home is shared by every
`registry` command; a file lock makes "find it running, or start it" safe when two commands start at once.

Private by default (docs/security.md): the home and everything in it is owner-only (0700/0600, the server runs
with umask 077), and the server requires SCRAM authentication. SecantusDB creates users only over a connection to
an unauthenticated server, and listens on TCP only, so the first start of a home runs it once without `--auth`
(on a fresh port, for about a second), creates an admin and a read-only user with random passwords, restarts it
with `--auth` and then checks, as the admin, that nothing else happened meanwhile: exactly these two users with
exactly their roles and password mechanism, no custom role, no write in the oplog. Anything else refuses the
start and writes no credentials. The passwords go to `credentials.json` (0600): the home's owner is the admin
without typing a password, everyone else needs credentials. A home once secured always starts with `--auth`.

A home made before this was the default (data, no credentials) is "open": it is refused until
`registry db secure` (`EmbeddedServer.secure`) upgrades it. Tests and throwaway benchmark homes may still ask
for an open server explicitly (`ensure_running(auth=False)`).
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from registry.errors import DatabaseUnavailable

USERS = {  # role in this registry -> (user name, MongoDB roles)
    "admin": ("registry-admin", [{"role": "root", "db": "admin"}]),
    "reader": ("registry-reader", [{"role": "readAnyDatabase", "db": "admin"}]),
}
MECHANISM = "SCRAM-SHA-256"
USER_EXISTS = 51003
PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600


@dataclass(frozen=True)
class Credentials:
    """A database user; the password is never part of the repr."""

    username: str
    password: str = field(repr=False)


@dataclass
class ServerState:
    """What `registry db start` records so later commands find the server."""

    pid: int
    host: str
    port: int
    storage: str
    started: float
    auth: bool = False

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}/"


def _daemon_executable() -> str:
    """Prefer the daemon installed next to this interpreter (the same virtualenv)."""
    local = Path(sys.executable).parent / "secantusd-py"
    found = str(local) if local.exists() else shutil.which("secantusd-py")
    if not found:
        raise DatabaseUnavailable("secantusd-py not found: install SecantusDB (pip install SecantusDB) or set REGISTRY_DB")
    return found


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours is not alive
        waited, _ = os.waitpid(pid, os.WNOHANG)
        return waited == 0
    except ChildProcessError:
        return True


def _write_private(path: Path, text: str) -> None:
    """Write `path` atomically, readable by its owner only from the first byte."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    tmp.replace(path)


class EmbeddedServer:
    """Start, find, secure and stop the SecantusDB server that keeps its data in `home/db`."""

    def __init__(self, home: Path, host: str = "127.0.0.1"):
        self.home = Path(home)
        self.host = host
        self.storage = self.home / "db"
        self.state_file = self.home / "server.json"
        self.log_file = self.home / "server.log"
        self.credentials_file = self.home / "credentials.json"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        try:
            self.make_private()
            fd = os.open(self.home / "server.lock", os.O_RDWR | os.O_CREAT, PRIVATE_FILE)
        except PermissionError:
            raise DatabaseUnavailable(
                f"the registry home {self.home} belongs to another user: ask them for a database URI with "
                "credentials and pass it with --db") from None
        with os.fdopen(fd, "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def make_private(self) -> None:
        """The home and everything in it owner-only: folders 0700, files 0600 (what an older registry left 0755 and
        0644 included). Links are left alone: they are not ours to follow."""
        self.home.mkdir(parents=True, exist_ok=True, mode=PRIVATE_DIR)
        self.home.chmod(PRIVATE_DIR)
        for folder, dirs, files in os.walk(self.home):
            for name in dirs:
                if not (path := Path(folder, name)).is_symlink():
                    path.chmod(PRIVATE_DIR)
            for name in files:
                if not (path := Path(folder, name)).is_symlink():
                    path.chmod(PRIVATE_FILE)

    def _recorded(self) -> ServerState | None:
        try:
            return ServerState(**json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def status(self) -> ServerState | None:
        """The running server, or None (a stale state file from a dead server counts as none)."""
        state = self._recorded()
        if state and _alive(state.pid) and _accepts(state.host, state.port):
            return state
        return None

    def credentials(self, role: str = "admin") -> Credentials | None:
        """The user made for `role` ("admin" or "reader") when this home was secured, if it was."""
        try:
            return Credentials(**json.loads(self.credentials_file.read_text())[role])
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def is_open(self) -> bool:
        """A home with data and no credentials: made before authentication was the default, or started with
        `auth=False`; every local user can read and change its database."""
        return (self.storage / "WiredTiger").exists() and not self.credentials_file.exists()

    def ensure_running(self, auth: bool | None = None, wait_s: float = 60.0) -> ServerState:
        """Use the running server or start one; safe to call from several processes at once.

        `auth=None` (the default): a new home is secured, a secured one starts with authentication, an open one is
        refused (`secure` upgrades it). `auth=True` secures an open home too. `auth=False` runs a new or open home
        without authentication (tests, throwaway benchmarks); a secured home never loses it.
        """
        state = self.status()
        if state and (state.auth or (auth is False and not self.credentials_file.exists())):
            return state
        with self._lock():
            secure = self._wants_auth(auth)
            recorded = self._recorded()
            if recorded and secure and not recorded.auth and _alive(recorded.pid):
                # stopped without asking it first: a connection accepted just before SIGTERM stalls the shutdown
                self._terminate(recorded, wait_s=30.0)
            if state := self.status():
                return state
            if secure and not self.credentials_file.exists():
                return self._provision(wait_s)
            return self._start(auth=secure, wait_s=wait_s)

    def secure(self, wait_s: float = 60.0) -> ServerState:
        """Upgrade this home to private (owner-only files, authentication) and run it; the data stays. Idempotent."""
        return self.ensure_running(auth=True, wait_s=wait_s)

    def _wants_auth(self, auth: bool | None) -> bool:
        if self.credentials_file.exists():
            return True
        if auth is None and self.is_open():
            raise DatabaseUnavailable(
                f"the registry in {self.home} is open: its database accepts every local user without a password "
                "(made before authentication was the default). Run `registry db secure` to require "
                "authentication; the data stays")
        return auth is not False

    def _provision(self, wait_s: float) -> ServerState:
        """Create the admin and read-only users on a briefly unauthenticated server, restart it with `--auth`,
        check that nothing else happened meanwhile, and only then record it and write the credentials."""
        import pymongo

        users = {role: Credentials(name, secrets.token_urlsafe(24)) for role, (name, _) in USERS.items()}
        since = datetime.now(UTC)
        state = self._start(auth=False, wait_s=wait_s, record=False)
        try:
            with pymongo.MongoClient(state.uri, serverSelectionTimeoutMS=int(wait_s * 1000)) as client:
                self._create_users(client, users)
        finally:
            self._terminate(state, wait_s=30.0, forget=False)
        state = self._start(auth=True, wait_s=wait_s, record=False)
        try:
            problems = self._tampering(state, users, since, wait_s)
        except Exception:
            self._terminate(state, wait_s=30.0, forget=False)
            raise
        if problems:
            self._terminate(state, wait_s=30.0, forget=False)
            raise DatabaseUnavailable(
                f"refused to secure {self.home}: while its users were set up (SecantusDB makes users only on a "
                f"server that briefly accepts anyone) something else changed it: {'; '.join(problems)}. "
                f"Nothing was recorded and no credentials were kept; its data is in {self.storage}")
        _write_private(self.credentials_file, json.dumps({role: asdict(user) for role, user in users.items()}))
        self._record(state)
        return state

    def _create_users(self, client: Any, users: dict[str, Credentials]) -> None:
        from pymongo.errors import OperationFailure

        for role, user in users.items():
            roles = USERS[role][1]
            try:
                client.admin.command("createUser", user.username, pwd=user.password, roles=roles,
                                     mechanisms=[MECHANISM])
            except OperationFailure as exc:  # a home whose credentials file was deleted: new passwords
                if exc.code != USER_EXISTS:
                    raise
                client.admin.command("updateUser", user.username, pwd=user.password, roles=roles,
                                     mechanisms=[MECHANISM])

    def _tampering(self, state: ServerState, users: dict[str, Credentials], since: datetime,
                   wait_s: float) -> list[str]:
        """What differs from what the set-up wrote, judged on the authenticated server, where nothing can change
        any more: every user with its roles and mechanisms, custom roles, and every write since `since` (the
        oplog). A password changed meanwhile shows as a failed authentication."""
        import pymongo
        from pymongo.errors import OperationFailure

        problems: list[str] = []
        timeout = int(wait_s * 1000)
        for user in users.values():
            with pymongo.MongoClient(state.uri, username=user.username, password=user.password,
                                     authMechanism=MECHANISM, serverSelectionTimeoutMS=timeout) as client:
                try:
                    client.admin.command("connectionStatus")
                except OperationFailure as exc:
                    problems.append(f"{user.username} cannot log in with the password just set ({exc.code})")
        if problems:
            return problems
        admin = users["admin"]
        with pymongo.MongoClient(state.uri, username=admin.username, password=admin.password,
                                 authMechanism=MECHANISM, serverSelectionTimeoutMS=timeout, tz_aware=True) as client:
            expected = {(name, "admin"): roles for name, roles in USERS.values()}
            for record in client.admin["system.users"].find():
                key = (record.get("user"), record.get("db"))
                roles = sorted((r.get("role"), r.get("db")) for r in record.get("roles", []))
                if key not in expected:
                    problems.append(f"unexpected user {key[0]}@{key[1]} with roles {roles}")
                elif roles != sorted((r["role"], r["db"]) for r in expected[key]):
                    problems.append(f"{key[0]} has the roles {roles}")
                elif record.get("mechanisms") != [MECHANISM]:
                    problems.append(f"{key[0]} has the mechanisms {record.get('mechanisms')}")
            for db in {"admin", *client.list_database_names()}:
                if custom := [r["role"] for r in client[db].command("rolesInfo", 1)["roles"]]:
                    problems.append(f"custom roles in {db}: {sorted(custom)}")
            writes = sorted({entry.get("ns") or "?" for entry in client.local["oplog.rs"].find(
                {"wall": {"$gte": since}, "op": {"$ne": "n"}}, {"ns": 1})})
            if writes:
                problems.append(f"writes to {', '.join(writes[:5])}")
        return problems

    def _start(self, auth: bool, wait_s: float, record: bool = True) -> ServerState:
        """Start the daemon (under `_lock`, which made the home private); `record=False` (set-up) keeps it out of
        the state file other commands read."""
        self.storage.mkdir(exist_ok=True, mode=PRIVATE_DIR)
        port = _free_port(self.host)
        config = self.home / "secantusd.toml"  # an empty one: no secantusd.toml elsewhere may change this server
        config.touch(mode=PRIVATE_FILE)
        # --sync-on-commit: an acknowledged write survives a crash (SIGKILL) of the server (bench/faults.py)
        cmd = [_daemon_executable(), "--config", str(config), "--host", self.host, "--port", str(port),
               "--storage-path", str(self.storage), "--log-level", "WARNING", "--sync-on-commit"]
        if auth:
            cmd.append("--auth")
        log = os.open(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE)
        try:  # umask 077: every file the server creates is owner-only too
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.home, umask=0o077)
        finally:
            os.close(log)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DatabaseUnavailable(f"the embedded database exited at start (code {proc.returncode}); "
                                          f"see {self.log_file}: {self._log_tail()}")
            if _accepts(self.host, port):
                state = ServerState(pid=proc.pid, host=self.host, port=port, storage=str(self.storage),
                                    started=time.time(), auth=auth)
                if record:
                    self._record(state)
                return state
            time.sleep(0.1)
        proc.kill()
        raise DatabaseUnavailable(f"the embedded database did not start within {wait_s:.0f} s; see {self.log_file}")

    def _record(self, state: ServerState) -> None:
        _write_private(self.state_file, json.dumps(asdict(state)))

    def stop(self, wait_s: float = 30.0) -> bool:
        """Stop the server cleanly (SIGTERM lets WiredTiger checkpoint); True if one was running.

        Liveness is judged by the pid alone: SecantusDB 0.7 can stall its shutdown until an idle timeout when a
        connection was accepted just before the signal, so we do not open one to ask.
        """
        with self._lock():
            state = self._recorded()
            if state is None or not _alive(state.pid):
                self.state_file.unlink(missing_ok=True)
                return False
            self._terminate(state, wait_s)
            return True

    def _terminate(self, state: ServerState, wait_s: float, forget: bool = True) -> None:
        """SIGTERM, then SIGKILL after `wait_s`; with `forget`, the state file goes too."""
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while _alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)
        if forget:
            self.state_file.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 3) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

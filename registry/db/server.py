"""The embedded database: a SecantusDB server (`secantusd-py`) run as its own process under REGISTRY_HOME.

It is started, never imported: SecantusDB is GPL-2.0 and talks to us only over the MongoDB wire protocol, like any
MongoDB server. Its WiredTiger storage takes an exclusive lock, so one server per home is shared by every
`registry` command; a file lock makes "find it running, or start it" safe when two commands start at once.

With `auth`, the server requires SCRAM authentication. SecantusDB provisions users over an unauthenticated
connection, so the first authenticated start runs the server once without `--auth` (on a fresh port, for a
moment), creates an admin and a read-only user with random passwords, writes them to `credentials.json` (mode
0600) and restarts with `--auth`. From then on the home always starts with `--auth`: auth cannot be lost by a
stop and a plain restart.
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
from pathlib import Path

from registry.errors import DatabaseUnavailable

USERS = {  # role in this registry -> (user name, MongoDB roles)
    "admin": ("registry-admin", [{"role": "root", "db": "admin"}]),
    "reader": ("registry-reader", [{"role": "readAnyDatabase", "db": "admin"}]),
}
USER_EXISTS = 51003


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


class EmbeddedServer:
    """Start, find, and stop the SecantusDB server that keeps its data in `home/db`."""

    def __init__(self, home: Path, host: str = "127.0.0.1"):
        self.home = Path(home)
        self.host = host
        self.storage = self.home / "db"
        self.state_file = self.home / "server.json"
        self.log_file = self.home / "server.log"
        self.credentials_file = self.home / "credentials.json"

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / "server.lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

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
        """The user `registry db start --auth` made for `role` ("admin" or "reader"), if this home has one."""
        try:
            return Credentials(**json.loads(self.credentials_file.read_text())[role])
        except (OSError, ValueError, TypeError, KeyError):
            return None

    def ensure_running(self, auth: bool = False, wait_s: float = 60.0) -> ServerState:
        """Use the running server or start one; safe to call from several processes at once. `auth` (or a home
        that was ever started with it) requires authentication; a running server without it is restarted."""
        recorded = self._recorded()
        if recorded and (recorded.auth or not (auth or self.credentials_file.exists())) and (state := self.status()):
            return state
        with self._lock():
            auth = auth or self.credentials_file.exists()
            recorded = self._recorded()
            if recorded and auth and not recorded.auth and _alive(recorded.pid):
                # stopped without asking it first: a connection accepted just before SIGTERM stalls the shutdown
                self._terminate(recorded, wait_s=30.0)
            state = self.status()
            if state:
                return state
            if auth and not self.credentials_file.exists():
                self._provision(wait_s)
            return self._start(auth=auth, wait_s=wait_s)

    def _provision(self, wait_s: float) -> None:
        """Create the admin and read-only users on a briefly unauthenticated server, then stop it."""
        import pymongo
        from pymongo.errors import OperationFailure

        state = self._start(auth=False, wait_s=wait_s, record=False)
        users = {role: Credentials(name, secrets.token_urlsafe(24)) for role, (name, _) in USERS.items()}
        try:
            with pymongo.MongoClient(state.uri, serverSelectionTimeoutMS=int(wait_s * 1000)) as client:
                for role, user in users.items():
                    roles = USERS[role][1]
                    try:
                        client.admin.command("createUser", user.username, pwd=user.password, roles=roles)
                    except OperationFailure as exc:  # a home whose credentials file was deleted: new passwords
                        if exc.code != USER_EXISTS:
                            raise
                        client.admin.command("updateUser", user.username, pwd=user.password, roles=roles)
                # anyone local could have connected during this window: only our users may exist
                present = {u["user"] for u in client.admin.command("usersInfo")["users"]}
                if stranger := present - {u.username for u in users.values()}:
                    raise DatabaseUnavailable(f"unexpected database users {sorted(stranger)} appeared while "
                                              f"{self.home} was provisioned without authentication; refusing")
        finally:
            self._terminate(state, wait_s=30.0)
        tmp = self.credentials_file.with_suffix(".tmp")
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            json.dump({role: asdict(user) for role, user in users.items()}, fh)
        tmp.replace(self.credentials_file)

    def _start(self, auth: bool, wait_s: float, record: bool = True) -> ServerState:
        """Start the daemon; `record=False` (provisioning) keeps it out of the state file other commands read."""
        self.storage.mkdir(parents=True, exist_ok=True)
        if auth:  # the data files would bypass authentication if others could read them
            self.storage.chmod(0o700)
        port = _free_port(self.host)
        config = self.home / "secantusd.toml"  # an empty one: no secantusd.toml elsewhere may change this server
        config.touch()
        # --sync-on-commit: an acknowledged write survives a crash (SIGKILL) of the server (bench/faults.py)
        cmd = [_daemon_executable(), "--config", str(config), "--host", self.host, "--port", str(port),
               "--storage-path", str(self.storage), "--log-level", "WARNING", "--sync-on-commit"]
        if auth:
            cmd.append("--auth")
        with open(self.log_file, "ab") as log:
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, cwd=self.home)
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise DatabaseUnavailable(f"the embedded database exited at start (code {proc.returncode}); "
                                          f"see {self.log_file}: {self._log_tail()}")
            if _accepts(self.host, port):
                state = ServerState(pid=proc.pid, host=self.host, port=port, storage=str(self.storage),
                                    started=time.time(), auth=auth)
                if record:
                    tmp = self.state_file.with_suffix(".tmp")
                    tmp.write_text(json.dumps(asdict(state)))
                    tmp.replace(self.state_file)
                return state
            time.sleep(0.1)
        proc.kill()
        raise DatabaseUnavailable(f"the embedded database did not start within {wait_s:.0f} s; see {self.log_file}")

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

    def _terminate(self, state: ServerState, wait_s: float) -> None:
        """SIGTERM, then SIGKILL after `wait_s`; forget the state file."""
        os.kill(state.pid, signal.SIGTERM)
        deadline = time.monotonic() + wait_s
        while _alive(state.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(state.pid):
            os.kill(state.pid, signal.SIGKILL)
        self.state_file.unlink(missing_ok=True)

    def _log_tail(self, lines: int = 3) -> str:
        try:
            return " | ".join(self.log_file.read_text(errors="replace").strip().splitlines()[-lines:])
        except OSError:
            return ""

"""Where the registry's database is: `--db URI`, else `REGISTRY_DB`, else an embedded server under `REGISTRY_HOME`.

Credentials come from the URI (`mongodb://user:pass@host/db`) or from `REGISTRY_USERNAME`/`REGISTRY_PASSWORD`;
TLS from the URI (`?tls=true&tlsCAFile=...`) or from `REGISTRY_TLS`, `REGISTRY_TLS_CA_FILE` and
`REGISTRY_TLS_CERTIFICATE_KEY_FILE`. All of them reach pymongo's MongoClient unchanged; none is ever printed.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pymongo.uri_parser import parse_uri

DEFAULT_DATABASE = "registry"
DEFAULT_HOME = ".registry"


@dataclass(frozen=True, repr=False)
class Settings:
    """Resolved once per command; `db_uri is None` means: use (or start) the embedded server in `home`."""

    db_uri: str | None = None
    home: Path = field(default_factory=lambda: Path(DEFAULT_HOME))
    database: str | None = None
    timeout_ms: int = 5000
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: tuple[tuple[str, Any], ...] = ()  # (MongoClient option, value) pairs

    @classmethod
    def resolve(cls, db: str | None = None, home: str | Path | None = None, database: str | None = None) -> Settings:
        """Explicit arguments win over the environment, which wins over defaults."""
        return cls(
            db_uri=db or os.environ.get("REGISTRY_DB") or None,
            home=Path(home or os.environ.get("REGISTRY_HOME") or DEFAULT_HOME).absolute(),
            database=database or os.environ.get("REGISTRY_DATABASE") or None,
            timeout_ms=int(os.environ.get("REGISTRY_TIMEOUT_MS", "5000")),
            username=os.environ.get("REGISTRY_USERNAME") or None,
            password=os.environ.get("REGISTRY_PASSWORD") or None,
            tls=_tls_from_environment(),
        )

    def __repr__(self) -> str:
        """Without credentials: settings end up in logs and tracebacks."""
        uri = redact(self.db_uri) if self.db_uri else None
        return (f"Settings(db_uri={uri!r}, home={str(self.home)!r}, database={self.database!r}, "
                f"username={self.username!r}, tls={dict(self.tls)!r})")

    def client_options(self) -> dict[str, Any]:
        """MongoClient keyword arguments beyond the URI: credentials and TLS from the environment, if set."""
        options: dict[str, Any] = dict(self.tls)
        if self.username:
            options.update(username=self.username, password=self.password)
        return options


_TLS_ENVIRONMENT = {"REGISTRY_TLS": "tls", "REGISTRY_TLS_CA_FILE": "tlsCAFile",
                    "REGISTRY_TLS_CERTIFICATE_KEY_FILE": "tlsCertificateKeyFile"}


def _tls_from_environment() -> tuple[tuple[str, Any], ...]:
    options = []
    for variable, option in _TLS_ENVIRONMENT.items():
        value = os.environ.get(variable)
        if value:
            options.append((option, value.strip().lower() in ("1", "true", "yes") if option == "tls" else value))
    return tuple(options)


def database_name(uri: str, default: str | None = None) -> str:
    """The database named in the URI path, else `default`, else "registry"."""
    return default or parse_uri(uri)["database"] or DEFAULT_DATABASE


_CREDENTIALS = re.compile(r"(?P<scheme>mongodb(?:\+srv)?://)(?P<userinfo>[^@/]*)@")
_SECRET_OPTIONS = re.compile(r"(?i)((?:password|tlsCertificateKeyFilePassword|authMechanismProperties)=)[^&]*")


def redact(uri: str) -> str:
    """The URI with user, password and secret options replaced, safe to print or log."""
    uri = _CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", uri)
    return _SECRET_OPTIONS.sub(r"\1***", uri)

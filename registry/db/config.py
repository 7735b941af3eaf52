"""Where the registry's database is: `--db URI`, else `REGISTRY_DB`, else an embedded server under `REGISTRY_HOME`.

Credentials come from the URI (`mongodb://user:pass@host/db`) or from `REGISTRY_USERNAME`/`REGISTRY_PASSWORD`;
TLS from the URI (`?tls=true&tlsCAFile=...`) or from `REGISTRY_TLS`, `REGISTRY_TLS_CA_FILE` and
`REGISTRY_TLS_CERTIFICATE_KEY_FILE`. All of them reach pymongo's MongoClient unchanged; none is ever printed, not
even from a URI too malformed for pymongo to read (`redact`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from pymongo.errors import ConfigurationError
from pymongo.uri_parser import parse_uri

from registry.errors import DatabaseUnavailable

DEFAULT_DATABASE = "registry"
DEFAULT_HOME = ".registry"


class Settings(BaseSettings):
    """The registry's one settings object, read from `REGISTRY_*` environment variables; explicit arguments
    (`--db`, `--home`) win. `db_uri is None` means: use (or start) the embedded server in `home`."""

    model_config = SettingsConfigDict(env_prefix="REGISTRY_", frozen=True, populate_by_name=True)

    db_uri: str | None = Field(None, validation_alias="REGISTRY_DB",
                               description="MongoDB URI; unset: the embedded server in `home`")
    home: Path = Field(Path(DEFAULT_HOME), description="Where the embedded server keeps its data and state")
    database: str | None = Field(None, description="Database name (default: the URI's, else 'registry')")
    timeout_ms: int = Field(5000, description="Server selection timeout of every client (ms)")
    query_timeout_ms: int = Field(5000, gt=0, description="Server-side time limit (maxTimeMS) of every user query")
    username: str | None = None
    password: SecretStr | None = None
    tls: bool | None = Field(None, description="TLS to the server (pymongo's tls option)")
    tls_ca_file: str | None = None
    tls_certificate_key_file: str | None = None

    @classmethod
    def resolve(cls, db: str | None = None, home: str | Path | None = None, database: str | None = None) -> Settings:
        """The environment, overridden by what was given explicitly; `home` made absolute."""
        explicit = {k: v for k, v in (("db_uri", db), ("home", home), ("database", database)) if v}
        settings = cls(**explicit)
        return settings.model_copy(update={"home": Path(settings.home).absolute(),
                                           "db_uri": settings.db_uri or None})

    def __repr__(self) -> str:
        """Without credentials: settings end up in logs and tracebacks."""
        uri = redact(self.db_uri) if self.db_uri else None
        return (f"Settings(db_uri={uri!r}, home={str(self.home)!r}, database={self.database!r}, "
                f"username={self.username!r}, tls={self.tls!r})")

    __str__ = __repr__

    def client_options(self) -> dict[str, Any]:
        """MongoClient keyword arguments beyond the URI: credentials and TLS from the environment, if set."""
        options: dict[str, Any] = {option: value for option, value in (
            ("tls", self.tls), ("tlsCAFile", self.tls_ca_file),
            ("tlsCertificateKeyFile", self.tls_certificate_key_file)) if value is not None}
        if self.username:
            options.update(username=self.username,
                           password=self.password.get_secret_value() if self.password else None)
        return options


def database_name(uri: str, default: str | None = None) -> str:
    """The database named in the URI path, else `default`, else "registry"."""
    return default or parse_uri(uri)["database"] or DEFAULT_DATABASE


def check_uri(uri: str) -> None:
    """Refuse a URI pymongo cannot use (scheme, port, options such as readPreference) in one line that shows it
    redacted: pymongo raises ValueError for some of these, which would end as a traceback."""
    try:
        parse_uri(uri, validate=True, warn=False)
    except (ConfigurationError, ValueError) as exc:
        raise DatabaseUnavailable(f"bad database URI {redact(uri)}: {scrub(str(exc), uri)}") from None


_SCHEME = re.compile(r"^\s*[A-Za-z][A-Za-z0-9+.-]*:/+")
_SECRET_OPTIONS = re.compile(r"(?i)((?:password|tlsCertificateKeyFilePassword|authMechanismProperties)=)[^&]*")


def redact(uri: str) -> str:
    """The URI with user, password and secret options replaced, safe to print or log. Malformed URIs too: any
    scheme or none, and everything up to the last '@' counts as credentials (an unescaped '@' or '/' in a
    password must not leave its end showing), so a host or path after such a character may be hidden as well."""
    scheme = _SCHEME.match(uri)
    head = scheme.group(0) if scheme else ""
    rest = uri[len(head):]
    if "@" in rest:
        rest = "***@" + rest.rsplit("@", 1)[1]
    return head + _SECRET_OPTIONS.sub(r"\1***", rest)


def scrub(text: str, uri: str | None) -> str:
    """`text` (an error message) without anything that could be the URI's credentials: its user-info part and
    every piece of it between ':' or '@', wherever they appear."""
    if not uri:
        return text
    scheme = _SCHEME.match(uri)
    rest = uri[len(scheme.group(0)) if scheme else 0:]
    if "@" not in rest:
        return text
    userinfo = rest.rsplit("@", 1)[0]
    for secret in sorted({userinfo, *re.split(r"[:@]", userinfo)}, key=len, reverse=True):
        if len(secret) >= 3:
            text = text.replace(secret, "***")
    return text

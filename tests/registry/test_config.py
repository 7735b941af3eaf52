from pathlib import Path

from registry.db.config import Settings, database_name, redact


def test_explicit_uri_wins_over_environment(monkeypatch):
    monkeypatch.setenv("REGISTRY_DB", "mongodb://env-host:27017/envdb")
    assert Settings.resolve(db="mongodb://cli-host/x").db_uri == "mongodb://cli-host/x"
    assert Settings.resolve().db_uri == "mongodb://env-host:27017/envdb"


def test_no_uri_means_embedded_server_in_home(monkeypatch, tmp_path):
    monkeypatch.delenv("REGISTRY_DB", raising=False)
    monkeypatch.setenv("REGISTRY_HOME", str(tmp_path))
    settings = Settings.resolve()
    assert settings.db_uri is None
    assert settings.home == Path(tmp_path)


def test_database_name_comes_from_the_uri_path():
    assert database_name("mongodb://h:1/mydb?replicaSet=rs0") == "mydb"
    assert database_name("mongodb://h:1/") == "registry"
    assert database_name("mongodb://h:1/mydb", default="other") == "other"


def test_credentials_are_redacted():
    uri = "mongodb://alice:s3cret@db1:27017,db2:27017/reg?replicaSet=rs0&password=leak"
    shown = redact(uri)
    assert "alice" not in shown and "s3cret" not in shown and "leak" not in shown
    assert shown.startswith("mongodb://***@db1:27017,db2:27017/reg")
    assert redact("mongodb+srv://u:p@cluster.example.net/") == "mongodb+srv://***@cluster.example.net/"

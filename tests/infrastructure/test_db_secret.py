"""shazzam.app reads the database login from Secrets Manager (moto) and follows its rotation."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws
from shazzam import app as app_module
from shazzam.app import ACCESS_DENIED, SecretCredentials
from shazzam.db import MIGRATIONS


@pytest.fixture
def secret(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "eu-west-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        client = boto3.client("secretsmanager")
        value = {
            "username": "shazzam",
            "password": "first p@ss/word",
            "host": "cluster.example",
            "port": 3306,
            "dbname": "shazzam",
            "engine": "mysql",
        }
        arn = client.create_secret(Name="shazzam-db", SecretString=json.dumps(value))["ARN"]
        yield client, arn


def test_url_is_built_from_the_secret(secret, monkeypatch):
    client, arn = secret
    monkeypatch.delenv("SHAZZAM_DB_HOST", raising=False)
    monkeypatch.delenv("SHAZZAM_DB_TLS", raising=False)
    url = app_module.sa.engine.make_url(SecretCredentials(arn).url())
    assert (url.drivername, url.username, url.password, url.host, url.port, url.database) == (
        "mysql+pymysql",
        "shazzam",
        "first p@ss/word",
        "cluster.example",
        3306,
        "shazzam",
    )
    assert "ssl_check_hostname" not in url.query


@pytest.mark.parametrize("value, problem", [
    ("first p@ss/word", "it is not JSON"), ('["shazzam"]', "it is not a JSON object"),
    ('{"password": "first p@ss/word", "host": "cluster.example"}', "username missing"),
    ('{"username": "shazzam", "password": "first p@ss/word", "host": ""}', "host missing"),
    ('{"username": "shazzam", "password": "first p@ss/word", "host": "h", "port": "three"}', "its port is not a number"),
])
def test_a_secret_that_is_no_login_is_named_and_its_value_not_shown(secret, value, problem):
    client, arn = secret
    client.put_secret_value(SecretId=arn, SecretString=value)
    with pytest.raises(RuntimeError, match=problem) as refused:
        SecretCredentials(arn).url()
    assert arn in str(refused.value) and "p@ss" not in str(refused.value) and refused.value.__cause__ is None


def test_a_login_only_secret_takes_its_host_from_the_environment(secret, monkeypatch):
    """An RDS-managed master user secret holds a username and a password only."""
    client, arn = secret
    client.put_secret_value(SecretId=arn, SecretString='{"username": "shazzam", "password": "first p@ss/word"}')
    monkeypatch.setenv("SHAZZAM_DB_HOST", "proxy.example")
    url = app_module.sa.engine.make_url(SecretCredentials(arn).url())
    assert (url.username, url.host) == ("shazzam", "proxy.example")
    monkeypatch.delenv("SHAZZAM_DB_HOST")
    with pytest.raises(RuntimeError, match="host missing"):
        SecretCredentials(arn).url()


def test_a_binary_secret_is_no_login(secret):
    client, _arn = secret
    arn = client.create_secret(Name="shazzam-db-binary", SecretBinary=b"first p@ss/word")["ARN"]
    with pytest.raises(RuntimeError, match="it has no SecretString"):
        SecretCredentials(arn).url()


def test_proxy_host_and_verified_tls_come_from_the_environment(secret, monkeypatch):
    client, arn = secret
    monkeypatch.setenv("SHAZZAM_DB_HOST", "proxy.example")
    monkeypatch.setenv("SHAZZAM_DB_TLS", "verify")
    monkeypatch.setenv("SHAZZAM_DB_CA", "/etc/ssl/certs/ca-certificates.crt")
    url = app_module.sa.engine.make_url(SecretCredentials(arn).url())
    assert url.host == "proxy.example"
    assert url.query["ssl_check_hostname"] == "true" and url.query["ssl_ca"] == "/etc/ssl/certs/ca-certificates.crt"


class FakeDbapi:
    """A driver that refuses every password but the one it was told."""

    class OperationalError(Exception):
        pass

    def __init__(self, password):
        self.password = password
        self.attempts = []

    def connect(self, **params):
        self.attempts.append(params["password"])
        if params["password"] != self.password:
            raise self.OperationalError(ACCESS_DENIED, "Access denied")
        return "connection"


def test_a_refused_login_rereads_the_rotated_secret_once(secret):
    client, arn = secret
    credentials = SecretCredentials(arn, client=client)
    assert credentials.connect(FakeDbapi("first p@ss/word"), (), {"user": "shazzam"}) == "connection"
    # Rotation: the secret and the database now agree on a new password the cache does not know.
    client.put_secret_value(SecretId=arn, SecretString=json.dumps({**credentials.current(), "password": "second"}))
    dbapi = FakeDbapi("second")
    assert credentials.connect(dbapi, (), {"user": "shazzam"}) == "connection"
    assert dbapi.attempts == ["first p@ss/word", "second"]
    with pytest.raises(FakeDbapi.OperationalError):  # a password nobody knows: refused after one retry
        credentials.connect(FakeDbapi("third"), (), {"user": "shazzam"})


def test_a_rotation_that_switches_users_logs_in_as_the_new_user(secret):
    """RDS's alternating-users rotation hands the login to a clone user: the retry takes the
    secret's username as well as its password."""
    client, arn = secret
    credentials = SecretCredentials(arn, client=client)
    assert credentials.connect(FakeDbapi("first p@ss/word"), (), {"user": "shazzam"}) == "connection"
    client.put_secret_value(SecretId=arn, SecretString=json.dumps({**credentials.current(), "username": "shazzam_clone", "password": "second"}))
    params = {"user": "shazzam"}
    assert credentials.connect(FakeDbapi("second"), (), params) == "connection"
    assert params["user"] == "shazzam_clone"


def test_other_connection_errors_are_not_retried(secret):
    client, arn = secret

    class Down(FakeDbapi):
        def connect(self, **params):
            self.attempts.append(params["password"])
            raise self.OperationalError(2003, "Can't connect")

    dbapi = Down("x")
    with pytest.raises(Down.OperationalError):
        SecretCredentials(arn, client=client).connect(dbapi, (), {})
    assert len(dbapi.attempts) == 1


def test_without_a_secret_the_environment_url_is_used(monkeypatch, tmp_path):
    monkeypatch.delenv("SHAZZAM_DB_SECRET_ARN", raising=False)
    monkeypatch.setenv("SHAZZAM_DB_URL", f"sqlite:///{tmp_path / 'catalogue.db'}")
    database = app_module.database_from_environment()
    try:
        assert database.dialect == "sqlite" and database.run_query("SELECT COUNT(*) AS n FROM shops") == [{"n": 0}]
    finally:
        database.close()


@pytest.mark.mysql
def test_mariadb_login_from_the_secret_survives_a_rotation(secret, mysql_url, monkeypatch):
    """Against the real server: open, migrate, rotate the password, keep working."""
    client, arn = secret
    server = app_module.sa.create_engine(mysql_url)
    url = app_module.sa.engine.make_url(mysql_url)
    user = f"shz_{url.database[-12:]}"
    with server.begin() as connection:
        connection.execute(app_module.sa.text(f"CREATE USER '{user}'@'%' IDENTIFIED BY 'first-password'"))
        connection.execute(app_module.sa.text(f"GRANT ALL ON `{url.database}`.* TO '{user}'@'%'"))
    value = {"username": user, "password": "first-password", "host": url.host, "port": url.port or 3306, "dbname": url.database}
    client.put_secret_value(SecretId=arn, SecretString=json.dumps(value))
    monkeypatch.setenv("SHAZZAM_DB_SECRET_ARN", arn)
    monkeypatch.delenv("SHAZZAM_DB_HOST", raising=False)
    monkeypatch.delenv("SHAZZAM_DB_TLS", raising=False)
    database = app_module.database_from_environment()
    try:
        assert database.dialect == "mysql"
        latest = max(version for version, *_ in MIGRATIONS)
        assert database.run_query("SELECT MAX(version) AS v FROM schema_migrations") == [{"v": latest}]
        # What Secrets Manager's single-user rotation does: a new password in the database and the secret.
        with server.begin() as connection:
            connection.execute(app_module.sa.text(f"ALTER USER '{user}'@'%' IDENTIFIED BY 'second-password'"))
        client.put_secret_value(SecretId=arn, SecretString=json.dumps({**value, "password": "second-password"}))
        database.engine.dispose()  # the pooled connections age out (pool_recycle); new ones log in again
        assert database.run_query("SELECT COUNT(*) AS n FROM shops") == [{"n": 0}]
    finally:
        database.close()
        with server.begin() as connection:
            connection.execute(app_module.sa.text(f"DROP USER IF EXISTS '{user}'@'%'"))
        server.dispose()

"""The adapters a handler works with, built once per warm container from the environment.

Environment (all optional; the defaults are the embedded runtime):
  SHAZZAM_DATA_DIR   local data folder (default ./.shazzam)
  SHAZZAM_DB_URL     SQLAlchemy URL (default sqlite:///$SHAZZAM_DATA_DIR/catalogue.db);
                     mysql+pymysql://... in the cloud
  SHAZZAM_BUCKET     S3 bucket; without it objects live in $SHAZZAM_DATA_DIR/objects
  SHAZZAM_MODEL_DIR  folder of the .tflite models and their manifests
  SHAZZAM_DB_SECRET_ARN  in the cloud, instead of SHAZZAM_DB_URL: a Secrets Manager secret of
                     RDS's shape ({"username", "password", "host", "port", "dbname"}), re-read
                     when a login is refused (rotation); SHAZZAM_DB_HOST overrides its host
                     (the RDS Proxy endpoint), SHAZZAM_DB_TLS=verify connects over verified TLS
The embedded runtime and the tests install their own adapters with `configure`.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import sqlalchemy as sa

from shazzam.db import Database
from shazzam.storage import LocalFolderStore, ObjectStore, S3Store


@dataclass
class App:
    db: Database
    store: ObjectStore
    model_dir: str | None = None
    fetcher_factory: Callable[[], object] | None = None
    _cache: dict = field(default_factory=dict)

    @property
    def garment_model(self):
        from shazzam.vision import load_garment_model

        return load_garment_model(self.model_dir)

    @property
    def detector(self):
        from shazzam.detector import load_detector

        return load_detector(self.model_dir)

    def fetcher(self):
        if self.fetcher_factory is not None:
            return self.fetcher_factory()
        from shazzam.scrape import Fetcher

        return Fetcher()

    @property
    def shards(self):
        from shazzam.index import ShardReader

        if "shards" not in self._cache:
            self._cache["shards"] = ShardReader(self.store)
        return self._cache["shards"]


_current: App | None = None
_lock = threading.Lock()


def data_dir() -> Path:
    return Path(os.environ.get("SHAZZAM_DATA_DIR", ".shazzam"))


ACCESS_DENIED = 1045  # MySQL's ER_ACCESS_DENIED_ERROR: a login refused


def _login(value: str | None) -> dict:
    """A secret's value read as an RDS login; ValueError says what is wrong with it (never quoting it)."""
    if value is None:
        raise ValueError("it has no SecretString")
    try:
        secret = json.loads(value)
    except ValueError:
        raise ValueError("it is not JSON") from None
    if not isinstance(secret, dict):
        raise ValueError("it is not a JSON object")
    needed = ("username", "password") if os.environ.get("SHAZZAM_DB_HOST") else ("username", "password", "host")
    missing = [key for key in needed if not isinstance(secret.get(key), str) or not secret[key]]
    if missing:
        raise ValueError(f"{', '.join(missing)} missing")
    if not re.fullmatch(r"\d{1,5}", str(secret.get("port") or 3306)):
        raise ValueError("its port is not a number")
    return secret


class SecretCredentials:
    """The database login kept in Secrets Manager, fetched once and again only when refused."""

    def __init__(self, secret_arn: str, client=None):
        self.secret_arn = secret_arn
        self._client = client
        self._value: dict | None = None
        self._lock = threading.Lock()

    def _fetch(self) -> dict:
        if self._client is None:
            import boto3

            self._client = boto3.client("secretsmanager")
        try:
            return _login(self._client.get_secret_value(SecretId=self.secret_arn).get("SecretString"))
        except ValueError as problem:
            # Never the value, nor a parse error (which quotes it): it may hold the password.
            raise RuntimeError(f"the database secret {self.secret_arn} is not an RDS login (a JSON object with "
                               f"username, password and, unless SHAZZAM_DB_HOST names it, host; port and dbname optional): "
                               f"{problem}") from None

    def current(self, refresh: bool = False) -> dict:
        with self._lock:
            if self._value is None or refresh:
                self._value = self._fetch()
            return self._value

    def url(self) -> str:
        secret = self.current()
        query = {"charset": "utf8mb4"}
        if os.environ.get("SHAZZAM_DB_TLS", "off") == "verify":
            # pymysql verifies only when given a CA file: the system bundle, which trusts the
            # proxy's ACM-issued certificate.
            query["ssl_ca"] = os.environ.get("SHAZZAM_DB_CA") or ssl.get_default_verify_paths().openssl_cafile
            query["ssl_check_hostname"] = "true"
        return sa.engine.URL.create(
            "mysql+pymysql",
            username=secret["username"],
            password=secret["password"],
            host=os.environ.get("SHAZZAM_DB_HOST") or secret["host"],
            port=int(secret.get("port") or 3306),
            database=secret.get("dbname") or "shazzam",
            query=query,
        ).render_as_string(hide_password=False)

    def install(self, engine: sa.Engine) -> None:
        """Make the engine's new connections log in with the secret's current password."""
        sa.event.listen(engine, "do_connect", lambda dialect, _record, cargs, cparams: self.connect(dialect.dbapi, cargs, cparams))

    def connect(self, dbapi, cargs, cparams):
        """Connect; after a refused login (the secret rotated since it was read) read it again, retry once."""
        cparams["password"] = self.current()["password"]
        try:
            return dbapi.connect(*cargs, **cparams)
        except dbapi.OperationalError as exc:
            if not exc.args or exc.args[0] != ACCESS_DENIED:
                raise
        secret = self.current(refresh=True)
        cparams.update(user=secret["username"], password=secret["password"])
        return dbapi.connect(*cargs, **cparams)


def database_from_environment(migrate: bool = True) -> Database:
    """The catalogue database the environment names, opened (and migrated unless told not to)."""
    secret_arn = os.environ.get("SHAZZAM_DB_SECRET_ARN")
    if not secret_arn:
        return Database(migrate=migrate).open_connection()
    credentials = SecretCredentials(secret_arn)
    database = Database(credentials.url(), migrate=migrate).open_connection()
    credentials.install(database.engine)  # later connections follow the secret's rotations
    return database


def from_environment() -> App:
    bucket = os.environ.get("SHAZZAM_BUCKET")
    store = S3Store(bucket) if bucket else LocalFolderStore(data_dir() / "objects")
    return App(db=database_from_environment(), store=store, model_dir=os.environ.get("SHAZZAM_MODEL_DIR"))


def current() -> App:
    """The process-wide adapters (built from the environment on first use)."""
    global _current
    with _lock:
        if _current is None:
            _current = from_environment()
        return _current


def configure(app: App | None) -> None:
    """Install (or with None, forget) the adapters `current()` returns."""
    global _current
    with _lock:
        _current = app

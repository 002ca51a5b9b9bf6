"""The adapters a handler works with, built once per warm container from the environment.

Environment (all optional; the defaults are the embedded runtime):
  SHAZZAM_DATA_DIR   local data folder (default ./.shazzam)
  SHAZZAM_DB_URL     SQLAlchemy URL (default sqlite:///$SHAZZAM_DATA_DIR/catalogue.db);
                     mysql+pymysql://... in the cloud
  SHAZZAM_BUCKET     S3 bucket; without it objects live in $SHAZZAM_DATA_DIR/objects
  SHAZZAM_MODEL_DIR  folder of the .tflite models and their manifests
The embedded runtime and the tests install their own adapters with `configure`.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

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

        return load_detector()

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


def from_environment() -> App:
    bucket = os.environ.get("SHAZZAM_BUCKET")
    store = S3Store(bucket) if bucket else LocalFolderStore(data_dir() / "objects")
    return App(db=Database().open_connection(), store=store, model_dir=os.environ.get("SHAZZAM_MODEL_DIR"))


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

"""The deploy-time migration function (cdk/migrate/handler.py) applies the schema once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from shazzam.db import MIGRATIONS

ROOT = Path(__file__).resolve().parents[2]


def test_migration_applies_pending_versions_then_nothing(monkeypatch, tmp_path):
    monkeypatch.delenv("SHAZZAM_DB_SECRET_ARN", raising=False)
    monkeypatch.setenv("SHAZZAM_DB_URL", f"sqlite:///{tmp_path / 'catalogue.db'}")
    spec = importlib.util.spec_from_file_location("migrate_handler", ROOT / "cdk" / "migrate" / "handler.py")
    handler = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(handler)
    assert handler.lambda_handler({}, None) == {"applied": [version for version, *_ in MIGRATIONS]}
    assert handler.lambda_handler({}, None) == {"applied": []}

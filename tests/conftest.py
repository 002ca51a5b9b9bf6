"""Shared fixtures: real MariaDB, moto-emulated AWS, the shared data set.

A test that needs something absent skips on a developer's machine but fails in CI (CI=true):
MySQL and ../shared/data are part of CI's contract.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("SHAZZAM_SHARED_DATA", REPO.parent / "shared" / "data"))
MYSQL_SERVER_URL = os.environ.get("SHAZZAM_TEST_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"{reason} (required in CI)")
    pytest.skip(reason)


@pytest.fixture
def mysql_url():
    """A fresh, empty MariaDB/MySQL database for one test, dropped afterwards."""
    import sqlalchemy as sa

    server = sa.create_engine(MYSQL_SERVER_URL)
    name = f"shazzam_test_{uuid.uuid4().hex[:12]}"
    try:
        with server.begin() as connection:
            connection.execute(sa.text(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4"))
    except sa.exc.OperationalError as exc:
        unavailable(f"no MySQL server at {MYSQL_SERVER_URL}: {exc.orig}")
    try:
        yield f"{MYSQL_SERVER_URL}/{name}?charset=utf8mb4"
    finally:
        with server.begin() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS `{name}`"))
        server.dispose()


@pytest.fixture
def shared_data() -> Path:
    if not (SHARED_DATA / "clothing-dataset-small").is_dir():
        unavailable(f"shared data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def aws(monkeypatch):
    """moto's in-memory AWS for the test (S3, EventBridge, SQS, Secrets Manager)."""
    from moto import mock_aws

    for name, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }.items():
        monkeypatch.setenv(name, value)
    with mock_aws():
        yield


@pytest.fixture
def s3_bucket(aws) -> str:
    import boto3

    name = "shazzam-test-catalogue"
    boto3.client("s3").create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-1"})
    return name


@pytest.fixture
def sqlite_url(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'catalogue.db'}"


@pytest.fixture(params=["sqlite", pytest.param("mysql", marks=pytest.mark.mysql)])
def db_url(request, tmp_path):
    """Both database backends: each test using it runs once on SQLite and once on MariaDB."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'catalogue.db'}"
    return request.getfixturevalue("mysql_url")

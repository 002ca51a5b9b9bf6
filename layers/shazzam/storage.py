"""One object-store interface, two backends: a local folder (embedded default) and S3.

Both support the conditional writes the index relies on: `if_none_match=True` creates only
when the key is absent, `if_match=etag` replaces (or deletes) only the version the caller read,
so a stage never deletes an input that was rewritten after it read it. The local
store can also emit S3-shaped `ObjectCreated` events, which is how the embedded runtime wires
uploads to functions exactly as S3 notifications do in the cloud.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Protocol

from shazzam.events import s3_object_created

log = logging.getLogger(__name__)


class ObjectNotFound(KeyError):
    """No object under that key."""


class PreconditionFailed(Exception):
    """A conditional write lost: the object changed (if_match) or exists (if_none_match)."""


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str


class ObjectStore(Protocol):
    bucket: str

    def get(self, key: str) -> bytes: ...

    def get_with_etag(self, key: str) -> tuple[bytes, str]: ...

    def head(self, key: str) -> ObjectInfo | None: ...

    def put(
        self,
        key: str,
        data: bytes,
        *,
        content_type: str = "application/octet-stream",
        if_match: str | None = None,
        if_none_match: bool = False,
    ) -> str: ...

    def delete(self, key: str, *, if_match: str | None = None) -> None: ...

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]: ...


def etag_of(data: bytes) -> str:
    """S3's ETag of a single-part upload: the quoted MD5 of the bytes."""
    return '"' + hashlib.md5(data, usedforsecurity=False).hexdigest() + '"'


def delete_if_unchanged(store: "ObjectStore", key: str, etag: str) -> bool:
    """Delete the version of `key` that was read (its ETag); False, and nothing deleted, when the
    object was rewritten since: the newer version is another event's to process."""
    try:
        store.delete(key, if_match=etag)
    except PreconditionFailed:
        log.info("%s changed since it was read: its new version is left for its own turn", key)
        return False
    return True


def validate_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise ValueError(f"invalid object key {key!r}")
    return key


class LocalFolderStore:
    """Objects as files under `root`; writes are atomic (temp file + rename) and serialised."""

    def __init__(self, root: str | os.PathLike, bucket: str = "shazzam-local", on_put: Callable[[dict], None] | None = None):
        self.root = Path(root)
        self.bucket = bucket
        self.on_put = on_put
        self.root.mkdir(parents=True, exist_ok=True)
        self._thread_lock = threading.Lock()
        self._lock_path = self.root.parent / f".{self.root.name}.lock"

    def _path(self, key: str) -> Path:
        return self.root / validate_key(key)

    def get(self, key: str) -> bytes:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, etag_of(data)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            data = self.get(key)
        except ObjectNotFound:
            return None
        return ObjectInfo(key, len(data), etag_of(data))

    def put(self, key, data, *, content_type="application/octet-stream", if_match=None, if_none_match=False) -> str:
        path = self._path(key)
        etag = etag_of(data)
        # The file lock serialises writers across processes, the thread lock across threads.
        with self._thread_lock, open(self._lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            if if_none_match or if_match is not None:
                current = self.head(key)
                if if_none_match and current is not None:
                    raise PreconditionFailed(f"{key} already exists")
                if if_match is not None and (current is None or current.etag != if_match):
                    raise PreconditionFailed(f"{key} changed since it was read")
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
            try:
                with os.fdopen(fd, "wb") as tmp_file:
                    tmp_file.write(data)
                    tmp_file.flush()
                    os.fsync(tmp_file.fileno())  # on disk before its name is: a power cut leaves old or new, not a stub
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
        if self.on_put is not None:
            self.on_put(s3_object_created(self.bucket, key, len(data), etag))
        return etag

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        path = self._path(key)
        with self._thread_lock, open(self._lock_path, "a") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            if if_match is not None:
                current = self.head(key)
                if current is None:
                    return
                if current.etag != if_match:
                    raise PreconditionFailed(f"{key} changed since it was read")
            path.unlink(missing_ok=True)
            # Folders are an artefact of this backend (S3 has none): drop the ones left empty.
            for parent in path.parents:
                if parent == self.root or not parent.is_relative_to(self.root):
                    break
                try:
                    parent.rmdir()
                except OSError:
                    break

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """The objects whose keys start with `prefix`, in key order, as S3 lists them."""
        folder = prefix.rpartition("/")[0]
        if folder and any(part in ("", ".", "..") for part in folder.split("/")):
            return  # no valid key lies there (validate_key), and the walk must not leave the root
        keys = []
        # Only the prefix's folder is walked. Other writers delete objects meanwhile, and with the
        # last object its folder (delete): a folder gone before the walk reached it is skipped
        # (onerror), as S3 would not list its objects either.
        for directory, _, names in os.walk(self.root / folder, onerror=lambda error: None):
            relative = Path(directory).relative_to(self.root).as_posix()
            for name in names:
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix) and not name.startswith(".tmp-"):
                    keys.append(key)
        for key in sorted(keys):
            try:
                size = (self.root / key).stat().st_size
            except FileNotFoundError:  # deleted by another writer since the walk saw it
                continue
            yield ObjectInfo(key, size, "")

    def written_at(self, key: str) -> float | None:
        """When the object was written (a Unix time); None if there is none."""
        try:
            return (self.root / key).stat().st_mtime
        except FileNotFoundError:
            return None

    def expire(self, prefix: str, max_age_s: float, only: Callable[[str], bool] | None = None) -> int:
        """What an S3 lifecycle rule does: delete the objects under `prefix` older than `max_age_s`
        seconds (by the time they were written), those `only` accepts if given. Returns how many."""
        cutoff, expired = time.time() - max_age_s, 0
        for info in list(self.list(prefix)):
            written = self.written_at(info.key)
            if written is not None and written < cutoff and (only is None or only(info.key)):
                self.delete(info.key)
                expired += 1
        return expired

    def remove_partial_writes(self, max_age_s: float) -> int:
        """Delete the temporary files of writes killed midway (a crash, an OOM kill) older than
        `max_age_s`: `put` removes its own only when it fails in-process, and `list` hides them."""
        cutoff, removed = time.time() - max_age_s, 0
        for path in self.root.rglob(".tmp-*"):
            try:
                if path.is_file() and path.stat().st_mtime < cutoff:
                    path.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
        return removed


def s3_client():
    """A client whose presigned POSTs S3 accepts: signed with SigV4 (botocore still presigns with
    SigV2 in the older regions, which S3 refuses for buckets made since June 2020) and addressed to
    the bucket's regional name (a fresh bucket's global name redirects for up to a day; the page's
    content security policy allows the regional one)."""
    import boto3
    from botocore.config import Config

    session = boto3.session.Session()
    region = session.region_name
    endpoint = None
    if region and session.get_partition_for_region(region) == "aws":
        endpoint = f"https://s3.{region}.amazonaws.com"
    return session.client("s3", config=Config(signature_version="s3v4", s3={"addressing_style": "virtual"}), endpoint_url=endpoint)


class S3Store:
    """An S3 bucket through boto3. Notifications come from S3 itself, not from this class."""

    def __init__(self, bucket: str, client=None):
        self.bucket = bucket
        self.client = client or s3_client()

    def _not_found(self, exc) -> bool:
        return exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound")

    def get(self, key: str) -> bytes:
        return self.get_with_etag(key)[0]

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if self._not_found(exc):
                raise ObjectNotFound(key) from None
            raise
        return response["Body"].read(), response["ETag"]

    def head(self, key: str) -> ObjectInfo | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.head_object(Bucket=self.bucket, Key=validate_key(key))
        except ClientError as exc:
            if self._not_found(exc):
                return None
            raise
        return ObjectInfo(key, response["ContentLength"], response["ETag"])

    def put(self, key, data, *, content_type="application/octet-stream", if_match=None, if_none_match=False) -> str:
        from botocore.exceptions import ClientError

        conditions = {}
        if if_none_match:
            conditions["IfNoneMatch"] = "*"
        if if_match is not None:
            conditions["IfMatch"] = if_match
        try:
            response = self.client.put_object(
                Bucket=self.bucket, Key=validate_key(key), Body=data, ContentType=content_type, **conditions
            )
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412", "NoSuchKey"):
                raise PreconditionFailed(f"{key}: {code}") from None
            raise
        return response["ETag"]

    def delete(self, key: str, *, if_match: str | None = None) -> None:
        from botocore.exceptions import ClientError

        conditions = {"IfMatch": if_match} if if_match is not None else {}
        try:
            self.client.delete_object(Bucket=self.bucket, Key=validate_key(key), **conditions)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code")
            if code in ("PreconditionFailed", "ConditionalRequestConflict", "412"):
                raise PreconditionFailed(f"{key}: {code}") from None
            if not self._not_found(exc):
                raise

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield ObjectInfo(item["Key"], item["Size"], item["ETag"])

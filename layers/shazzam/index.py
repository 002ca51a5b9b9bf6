"""Category-sharded embedding index: HDF5 shards, a manifest, and exact L1 search.

Layout in the object store:
  vectors/pending/<category>/<detection_id>.npy   written by embed, one vector each
  vectors/removed/<category>/<detection_id>       empty marker: embed moved the item to another category
  index/<category>/<version>.h5                   immutable shard versions
  index/manifest.json                             which version of each category is live

A shard is never edited in place. `publish` writes a new version, then swaps the manifest with a
conditional write (retrying on a lost race), so readers see the old or the new shard, never half
of one, and concurrent publishers never drop each other's vectors.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone

import h5py
import numpy as np

from shazzam.distance import l1_topk, l2_normalise
from shazzam.storage import ObjectNotFound, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

MANIFEST_KEY = "index/manifest.json"
PENDING_PREFIX = "vectors/pending/"
REMOVED_PREFIX = "vectors/removed/"
PUBLISH_ATTEMPTS = 8
# Superseded shard versions stay this long for readers that still hold the old manifest.
OLD_VERSION_GRACE_S = 15 * 60


@dataclass
class Shard:
    category: str
    ids: list[str]
    vectors: np.ndarray  # (n, d) float32, L2-normalised
    key: str = ""  # the object it was read from

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        rows, distances = l1_topk(query, self.vectors, k)
        return [(self.ids[row], float(distance)) for row, distance in zip(rows, distances)]


def encode_vector(vector: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(vector, dtype=np.float32), allow_pickle=False)
    return buffer.getvalue()


def decode_vector(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def encode_shard(shard: Shard, model: str) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs["category"] = shard.category
        h5.attrs["model"] = model
        h5.attrs["created_at"] = datetime.now(timezone.utc).isoformat()
        h5.create_dataset("ids", data=np.array(shard.ids, dtype=h5py.string_dtype()))
        dim = shard.vectors.shape[1] if shard.vectors.ndim == 2 else 0
        h5.create_dataset("vectors", data=shard.vectors.reshape(len(shard.ids), dim).astype(np.float32))
    return buffer.getvalue()


def decode_shard(data: bytes) -> Shard:
    with h5py.File(io.BytesIO(data), "r") as h5:
        ids = [value.decode() if isinstance(value, bytes) else value for value in h5["ids"][()]]
        return Shard(category=str(h5.attrs["category"]), ids=ids, vectors=h5["vectors"][()])


def read_manifest(store: ObjectStore) -> tuple[dict, str | None]:
    try:
        data, etag = store.get_with_etag(MANIFEST_KEY)
    except ObjectNotFound:
        return {"shards": {}}, None
    return json.loads(data), etag


def load_shard(store: ObjectStore, manifest: dict, category: str) -> Shard | None:
    entry = manifest["shards"].get(category)
    return decode_shard(store.get(entry["key"])) if entry else None


def publish(
    store: ObjectStore,
    category: str,
    add: dict[str, np.ndarray] | None = None,
    drop: set[str] | frozenset[str] = frozenset(),
    model: str = "garment_v0",
) -> dict:
    """Merge `add` into and remove `drop` from the category's shard; returns the new manifest entry."""
    add = add or {}
    for _attempt in range(PUBLISH_ATTEMPTS):
        manifest, etag = read_manifest(store)
        current = load_shard(store, manifest, category)
        merged: dict[str, np.ndarray] = {}
        if current is not None:
            merged = dict(zip(current.ids, current.vectors))
        merged.update({key: l2_normalise(vector) for key, vector in add.items()})
        for key in drop:
            merged.pop(key, None)
        ids = sorted(merged)
        vectors = np.stack([merged[key] for key in ids]) if ids else np.zeros((0, 0), np.float32)
        version = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        key = f"index/{category}/{version}.h5"
        store.put(key, encode_shard(Shard(category, ids, vectors), model), if_none_match=True)
        entry = {"key": key, "version": version, "count": len(ids), "model": model}
        manifest["shards"][category] = entry
        manifest["updated_at"] = datetime.now(timezone.utc).isoformat()
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        try:
            if etag is None:
                store.put(MANIFEST_KEY, body, content_type="application/json", if_none_match=True)
            else:
                store.put(MANIFEST_KEY, body, content_type="application/json", if_match=etag)
        except PreconditionFailed:
            store.delete(key)  # never referenced: someone else swapped the manifest first
            log.info("manifest changed while publishing %s; retrying", category)
            continue
        collect_old_versions(store, category, keep=key)
        return entry
    raise RuntimeError(f"could not publish {category}: the manifest kept changing")


def collect_old_versions(store: ObjectStore, category: str, keep: str, grace_s: float = OLD_VERSION_GRACE_S) -> None:
    """Delete superseded shard versions older than the grace period."""
    cutoff_ns = time.time_ns() - int(grace_s * 1e9)
    for info in store.list(f"index/{category}/"):
        version = info.key.rsplit("/", 1)[-1].split("-", 1)[0]
        if info.key != keep and version.isdigit() and int(version) < cutoff_ns:
            store.delete(info.key)


def vector_keys(store: ObjectStore, prefix: str = PENDING_PREFIX, suffix: str = ".npy") -> dict[str, list[str]]:
    """`<prefix><category>/<name><suffix>` keys (pending vectors, or removal markers) by category."""
    grouped: dict[str, list[str]] = {}
    for info in store.list(prefix):
        parts = info.key[len(prefix) :].split("/")
        if len(parts) == 2 and parts[1] and parts[1].endswith(suffix):
            grouped.setdefault(parts[0], []).append(info.key)
    return grouped


class ShardReader:
    """Serves searches from shards cached in memory while the manifest says they are current."""

    def __init__(self, store: ObjectStore, manifest_ttl_s: float = 5.0):
        self.store = store
        self.manifest_ttl_s = manifest_ttl_s
        self._lock = threading.Lock()
        self._manifest: dict = {"shards": {}}
        self._manifest_read_at = float("-inf")
        self._shards: dict[str, Shard] = {}

    def manifest(self) -> dict:
        with self._lock:
            if time.monotonic() - self._manifest_read_at > self.manifest_ttl_s:
                self._manifest, _ = read_manifest(self.store)
                self._manifest_read_at = time.monotonic()
            return self._manifest

    def categories(self) -> dict[str, int]:
        return {category: entry["count"] for category, entry in sorted(self.manifest()["shards"].items())}

    def shard(self, category: str) -> Shard | None:
        entry = self.manifest()["shards"].get(category)
        if entry is None:
            return None
        with self._lock:
            cached = self._shards.get(category)
            if cached is None or cached.key != entry["key"]:
                cached = decode_shard(self.store.get(entry["key"]))
                cached.key = entry["key"]
                self._shards[category] = cached
            return cached

    def search(self, category: str, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        shard = self.shard(category)
        if shard is None or not shard.ids:
            return []
        return shard.search(l2_normalise(query), k)

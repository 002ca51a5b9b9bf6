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

import hashlib
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

from shazzam.distance import QUANT_STEP, l1_topk_u8, l2_normalise, quantise
from shazzam.ids import key_stem
from shazzam.storage import ObjectNotFound, ObjectStore, PreconditionFailed

log = logging.getLogger(__name__)

MANIFEST_KEY = "index/manifest.json"
PENDING_PREFIX = "vectors/pending/"
REMOVED_PREFIX = "vectors/removed/"
PUBLISH_ATTEMPTS = 8
# Superseded shard versions stay this long for readers that still hold the old manifest.
OLD_VERSION_GRACE_S = 15 * 60
SHARD_FORMAT = 2  # 1 held float32 vectors; 2 holds uint8 codes (shazzam.distance.quantise)


class StaleShard(ValueError):
    """A query from another model than the one that made the shard: the two cannot be compared."""


class CorruptShard(ValueError):
    """A shard whose bytes do not match its checksum, or that is not a shard of this format."""


@dataclass
class Shard:
    category: str
    ids: list[str]
    codes: np.ndarray  # (n, d) uint8: quantise(l2_normalise(embedding))
    model: str = ""
    key: str = ""  # the object it was read from

    @property
    def dim(self) -> int:
        return int(self.codes.shape[1]) if self.codes.ndim == 2 else 0

    def search_many(self, queries: np.ndarray, k: int, parts: int = 1) -> list[list[tuple[str, float]]]:
        """The k nearest items to each query embedding: [(id, L1 distance)], nearest first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not self.ids:
            return [[] for _ in queries]
        if queries.shape[1] != self.dim:
            raise ValueError(f"query has {queries.shape[1]} dimensions, the {self.category} shard {self.dim}")
        rows, distances = l1_topk_u8(quantise(l2_normalise(queries)), self.codes, k, parts=parts)
        return [
            [(self.ids[row], float(distance) * QUANT_STEP) for row, distance in zip(query_rows, query_distances)]
            for query_rows, query_distances in zip(rows, distances)
        ]

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self.search_many(query, k)[0]


def encode_vector(vector: np.ndarray, model: str) -> bytes:
    """A pending vector and the model that made it (vectors of two models never share a shard)."""
    buffer = io.BytesIO()
    np.savez(buffer, vector=np.asarray(vector, dtype=np.float32), model=np.array(model))
    return buffer.getvalue()


def decode_vector(data: bytes) -> tuple[np.ndarray, str]:
    with np.load(io.BytesIO(data), allow_pickle=False) as stored:
        return stored["vector"], str(stored["model"])


def _checksum(id_bytes: np.ndarray, codes: np.ndarray) -> str:
    digest = hashlib.sha256(np.ascontiguousarray(codes).data)
    digest.update(np.ascontiguousarray(id_bytes).data)
    return digest.hexdigest()


def encode_shard(shard: Shard) -> bytes:
    codes = shard.codes.reshape(len(shard.ids), shard.dim)
    # Fixed-width UTF-8 bytes: read back as one array, far faster than variable-length strings.
    id_bytes = np.array([item.encode() for item in shard.ids], dtype=np.bytes_) if shard.ids else np.zeros(0, "S1")
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs.update(
            {
                "format": SHARD_FORMAT,
                "category": shard.category,
                "model": shard.model,
                "dim": shard.dim,
                "count": len(shard.ids),
                "metric": "l1",
                "quantisation": "uint8",
                "step": QUANT_STEP,
                "checksum": _checksum(id_bytes, codes),
                "created_at": datetime.now(timezone.utc).isoformat(),
            }
        )
        h5.create_dataset("ids", data=id_bytes)
        h5.create_dataset("codes", data=codes, dtype=np.uint8)
    return buffer.getvalue()


def decode_shard(data: bytes) -> Shard:
    """Read a shard, refusing one whose contents do not match its checksum."""
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            attrs = dict(h5.attrs)
            if attrs.get("format") != SHARD_FORMAT:
                raise CorruptShard(f"shard format {attrs.get('format')!r}, expected {SHARD_FORMAT}")
            id_bytes = h5["ids"][()]
            codes = h5["codes"][()]
    except CorruptShard:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CorruptShard(f"unreadable shard: {exc}") from exc
    if len(id_bytes) != attrs["count"] or _checksum(id_bytes, codes) != attrs["checksum"]:
        raise CorruptShard("shard contents do not match its checksum")
    ids = np.char.decode(id_bytes, "utf-8").tolist() if len(id_bytes) else []
    return Shard(category=str(attrs["category"]), ids=ids, codes=codes, model=str(attrs["model"]))


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
    model: str | None = None,
) -> dict:
    """Merge `add` into and remove `drop` from the category's shard; returns the new manifest entry.

    `model` names the model that embedded `add`; a shard of another model is replaced rather
    than mixed with it. None keeps the shard's own model (a removal needs no model).
    """
    add = add or {}
    for _attempt in range(PUBLISH_ATTEMPTS):
        manifest, etag = read_manifest(store)
        current = load_shard(store, manifest, category)
        if model is None:
            model = current.model if current is not None else "unspecified"
        merged: dict[str, np.ndarray] = {}
        if current is not None and current.model == model:
            merged = dict(zip(current.ids, current.codes))
        elif current is not None:
            log.warning("%s shard of model %s is replaced by one of model %s: re-embed its items", category, current.model, model)
        if add:
            merged.update(zip(add, quantise(l2_normalise(np.stack(list(add.values()))))))
        for key in drop:
            merged.pop(key, None)
        ids = sorted(merged)
        codes = np.stack([merged[key] for key in ids]) if ids else np.zeros((0, 0), np.uint8)
        version = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        key = f"index/{category}/{version}.h5"
        store.put(key, encode_shard(Shard(category, ids, codes, model=model)), if_none_match=True)
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


def compact(store: ObjectStore, model: str) -> dict[str, dict]:
    """One index run: merge pending vectors and removal markers into new shard versions.

    Only the keys it read are deleted, after the manifest that holds them is swapped in, so a
    vector written meanwhile waits for the next run and an overlapping run merges the same ids
    again (a dict by id: no duplicates). Returns, per category, the ids added and removed.
    """
    report = {}
    pending, removed = vector_keys(store, PENDING_PREFIX), vector_keys(store, REMOVED_PREFIX, suffix="")
    for category in sorted(set(pending) | set(removed)):
        vectors = {}
        for key in pending.get(category, []):
            try:
                vector, made_by = decode_vector(store.get(key))
            except ObjectNotFound:
                continue  # merged and deleted by an overlapping run
            if made_by != model:
                log.warning("dropping %s: embedded by %s, the index holds %s", key, made_by, model)
                continue
            vectors[key_stem(key)] = vector
        dropped = {key_stem(key) for key in removed.get(category, [])} - set(vectors)
        entry = publish(store, category, add=vectors, drop=dropped, model=model)
        for key in pending.get(category, []) + removed.get(category, []):
            store.delete(key)
        report[category] = {"added": sorted(vectors), "removed": sorted(dropped), "total": entry["count"]}
    return report


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
        """The live shard of a category; a corrupt new version is refused and the one in service kept."""
        entry = self.manifest()["shards"].get(category)
        if entry is None:
            return None
        with self._lock:
            cached = self._shards.get(category)
            if cached is None or cached.key != entry["key"]:
                try:
                    loaded = decode_shard(self.store.get(entry["key"]))
                except (CorruptShard, ObjectNotFound) as exc:
                    if cached is None:
                        raise
                    log.error("keeping %s in service: %s is unusable (%s)", cached.key, entry["key"], exc)
                    return cached
                loaded.key = entry["key"]
                self._shards[category] = cached = loaded
            return cached

    def search(self, category: str, query: np.ndarray, k: int, model: str | None = None) -> list[tuple[str, float]]:
        """Nearest items of a category to one embedding; empty for an empty or unknown category."""
        return self.search_many(category, np.asarray(query)[np.newaxis], k, model=model)[0]

    def search_many(self, category: str, queries: np.ndarray, k: int, model: str | None = None) -> list[list[tuple[str, float]]]:
        shard = self.shard(category)
        if shard is None or not shard.ids:
            return [[] for _ in queries]
        if model is not None and shard.model and model != shard.model:
            raise StaleShard(f"query embeddings come from model {model}, the {category} shard from {shard.model}")
        return shard.search_many(queries, k)

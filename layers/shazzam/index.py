"""Category-sharded embedding index: HDF5 shards, a manifest, and exact L1 search.

Layout in the object store:
  vectors/pending/<category>/<detection_id>.npy   written by embed, one vector each
  vectors/removed/<category>/<detection_id>       marker (a token): embed moved the item to another category
  index/<category>/<version>.h5                   immutable shard versions
  index/manifest.json                             which version of each category is live

A shard (format 3) holds per item: the uint8 scan codes (one byte a dimension), two quarter bits
per non-zero code (shazzam.distance.fine_codes) and its id, 22 bytes for a detection id
(`<sha1 hex>-<nnn>` packed as 20 + 2 bytes), else UTF-8; its attributes record the code step.
Format 2 shards (uint8 codes of a fixed step, fixed-width ids) are still read and searched; the
next publish of their category rewrites them as format 3. Format 1 (float32) is refused.

A shard is never edited in place. `publish` writes a new version, then swaps the manifest with a
conditional write (retrying on a lost race), so readers see the old or the new shard, never half
of one, and concurrent publishers never drop each other's vectors.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone

import h5py
import numpy as np

from shazzam.distance import (
    CHUNK_ROWS,
    FINE_MAX,
    QUANT_STEP,
    choose_step,
    fine_codes,
    join_codes,
    l2_normalise,
    low_bit_offsets,
    search_codes,
    split_codes,
    take_rows,
)
from shazzam.ids import key_stem
from shazzam.storage import ObjectNotFound, ObjectStore, PreconditionFailed, delete_if_unchanged

log = logging.getLogger(__name__)

MANIFEST_KEY = "index/manifest.json"
PENDING_PREFIX = "vectors/pending/"
REMOVED_PREFIX = "vectors/removed/"
UNREADABLE_PREFIX = "vectors/unreadable/"  # pending vectors an index run could not read or use, kept for a look
PUBLISH_ATTEMPTS = 8
# Superseded shard versions stay this long for readers that still hold the old manifest.
OLD_VERSION_GRACE_S = 15 * 60
# 1 held float32 vectors; 2 uint8 codes of one fixed step and fixed-width ids; 3 adds the quarter
# bits of the non-zero codes, the shard's own step and packed ids.
SHARD_FORMAT = 3
READABLE_FORMATS = (2, 3)
# Detection ids (shazzam.ids.detection_id): stored as the 20 digest bytes and a uint16.
PACKABLE_ID = re.compile(r"[0-9a-f]{40}-[0-9]{3}")
_HEX = np.frombuffer(b"0123456789abcdef", np.uint8)
_NIBBLE = np.zeros(256, np.uint8)
_NIBBLE[_HEX] = np.arange(16, dtype=np.uint8)


class StaleShard(ValueError):
    """A query from another model than the one that made the shard: the two cannot be compared."""


class CorruptShard(ValueError):
    """A shard whose bytes do not match its checksum, or that is not a shard of this format."""


@dataclass
class Shard:
    category: str
    ids: list[str]
    codes: np.ndarray  # (n, d) uint8 scan codes: quantise(l2_normalise(embedding), step)
    model: str = ""
    key: str = ""  # the object it was read from
    low_bits: np.ndarray | None = None  # packed quarter bits of the non-zero codes (split_codes); None: none
    step: float = QUANT_STEP  # the code step: distance = re-rank code distance x step / 8
    format: int = SHARD_FORMAT  # the format it was read from

    @classmethod
    def from_vectors(cls, category: str, ids: list[str], vectors: np.ndarray, model: str = "", step: float | None = None) -> "Shard":
        """Code embeddings (any scale) as a shard does: L2-normalised, on the step choose_step gives."""
        normalised = l2_normalise(vectors)
        step = choose_step(normalised, step)
        codes, low_bits = split_codes(fine_codes(normalised, step))
        return cls(category, list(ids), codes, model=model, low_bits=low_bits, step=step)

    @property
    def dim(self) -> int:
        return int(self.codes.shape[1]) if self.codes.ndim == 2 else 0

    @functools.cached_property
    def offsets(self) -> np.ndarray:
        return low_bit_offsets(self.codes)

    def fine(self) -> np.ndarray:
        """The re-rank codes (n, d), uint16 (shazzam.distance.fine_codes)."""
        return join_codes(self.codes, self.low_bits).astype(np.uint16)

    def search_rows(self, queries: np.ndarray, k: int, parts: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Rows and L1 distances of the k nearest items to each query embedding (shazzam.distance.search_codes)."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if queries.shape[1] != self.dim and self.ids:
            raise ValueError(f"query has {queries.shape[1]} dimensions, the {self.category} shard {self.dim}")
        for query in queries:
            check_vector(query)  # a NaN query would find every item at distance 0
        offsets = self.offsets if self.low_bits is not None else None
        return search_codes(l2_normalise(queries), self.codes, self.low_bits, self.step, k, parts=parts, offsets=offsets)

    def search_many(self, queries: np.ndarray, k: int, parts: int = 1) -> list[list[tuple[str, float]]]:
        """The k nearest items to each query embedding: [(id, L1 distance)], nearest first."""
        queries = np.atleast_2d(np.asarray(queries, dtype=np.float32))
        if not self.ids:
            return [[] for _ in queries]
        rows, distances = self.search_rows(queries, k, parts=parts)
        return [
            [(self.ids[row], float(distance)) for row, distance in zip(query_rows, query_distances)]
            for query_rows, query_distances in zip(rows.tolist(), distances.tolist())
        ]

    def search(self, query: np.ndarray, k: int) -> list[tuple[str, float]]:
        return self.search_many(query, k)[0]

    def without(self, ids: frozenset[str]) -> "Shard":
        """This shard less the rows of `ids`; itself when it holds none of them."""
        if not ids:
            return self
        keep = np.fromiter((item not in ids for item in self.ids), bool, len(self.ids))
        if keep.all():
            return self
        rows = np.flatnonzero(keep)
        codes, low_bits = take_rows(self.codes, self.low_bits, rows) if self.low_bits is not None else (self.codes[rows], None)
        return replace(self, ids=[self.ids[row] for row in rows], codes=codes, low_bits=low_bits)


NOTHING_HIDDEN: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Hidden:
    """Rows the shards hold that no search may show: the ids `read()` gives, read again only when
    `key` changes (ShardReader.search)."""

    key: Hashable
    read: Callable[[], frozenset[str]] = field(compare=False)


def encode_vector(vector: np.ndarray, model: str) -> bytes:
    """A pending vector and the model that made it (vectors of two models never share a shard).

    Each writing carries its own token: its ETag (an MD5 of the bytes) then differs from that of
    an earlier writing of the same embedding (an event delivered twice, an item re-filed and
    filed back), so a run's conditional delete of the version it merged leaves it for the next."""
    buffer = io.BytesIO()
    np.savez(buffer, vector=np.asarray(vector, dtype=np.float32), model=np.array(model), written=np.array(uuid.uuid4().hex))
    return buffer.getvalue()


def decode_vector(data: bytes) -> tuple[np.ndarray, str]:
    """encode_vector's writing read back; ValueError for anything else (a cut object, a bare .npy of
    the versions before vectors named their model, an archive without both entries)."""
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as stored:
            return stored["vector"], str(stored["model"])
    except ValueError:
        raise
    except Exception as exc:  # BadZipFile, KeyError, zlib.error, TypeError (a bare array), OSError, EOFError
        raise ValueError(f"not a pending vector ({type(exc).__name__}: {exc})") from None


def removal_marker() -> bytes:
    """A removal marker's body: a token of its own, so that a marker written again (the item
    re-filed out of the category again) has a new ETag and outlives a run that deletes the one
    it read. Empty markers, of before, are read the same."""
    return uuid.uuid4().hex.encode()


def _checksum(*parts) -> str:
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else np.ascontiguousarray(part).data)
    return digest.hexdigest()


def pack_ids(ids: list[str]) -> dict[str, np.ndarray]:
    """Ids as a shard stores them: detection ids as 20 digest bytes + a uint16 (22 bytes), any
    other id as UTF-8 in one newline-separated blob; one bit per item says which."""
    packed = np.array([PACKABLE_ID.fullmatch(item) is not None for item in ids], dtype=bool)
    chosen = [item for item, is_packed in zip(ids, packed) if is_packed]
    others = [item for item, is_packed in zip(ids, packed) if not is_packed]
    if any("\n" in item for item in others):
        raise ValueError("an id contains a newline")
    chars = np.frombuffer("".join(chosen).encode("ascii"), np.uint8).reshape(len(chosen), 44)
    nibbles = _NIBBLE[chars[:, :40]]
    digits = chars[:, 41:].astype(np.uint16) - ord("0")
    return {
        "id_packed": np.packbits(packed),
        "id_digest": (nibbles[:, 0::2] << 4) | nibbles[:, 1::2],
        "id_index": digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2],
        "id_text": np.frombuffer("\n".join(others).encode(), np.uint8),
    }


def unpack_ids(arrays: dict[str, np.ndarray], count: int) -> list[str]:
    packed = np.unpackbits(arrays["id_packed"], count=count).astype(bool)
    digest, index = arrays["id_digest"], arrays["id_index"].astype(np.uint16)
    if len(digest) != packed.sum() or len(index) != len(digest):
        raise CorruptShard("shard ids do not match their count")
    chars = np.empty((len(digest), 44), np.uint8)
    chars[:, 0:40:2], chars[:, 1:40:2] = _HEX[digest >> 4], _HEX[digest & 15]
    chars[:, 40] = ord("-")
    for position, unit in zip((41, 42, 43), (100, 10, 1)):
        chars[:, position] = ord("0") + index // unit % 10
    ids = np.empty(count, dtype=object)
    # Sliced from one string: a U44 array on the way would take 176 bytes an id.
    packed_text = str(chars, "ascii")
    ids[packed] = [packed_text[start : start + 44] for start in range(0, len(packed_text), 44)]
    text = arrays["id_text"].tobytes().decode()
    others = text.split("\n") if (~packed).any() else []
    if len(others) != (~packed).sum():
        raise CorruptShard("shard ids do not match their count")
    ids[~packed] = others
    return ids.tolist()


def encode_shard(shard: Shard) -> bytes:
    codes = shard.codes.reshape(len(shard.ids), shard.dim)
    low_bits = shard.low_bits if shard.low_bits is not None else split_codes(shard.fine())[1]
    id_arrays = pack_ids(shard.ids)
    datasets = {"codes": np.asarray(codes, np.uint8), "low_bits": np.asarray(low_bits, np.uint8), **id_arrays}  # no copies
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
                "quantisation": "uint8 round(x / step) + 2 quarter bits per non-zero code",
                "step": float(shard.step),
                "checksum": _checksum(_shape_line(shard.step, shard.dim, len(shard.ids)), *datasets.values()),
                "created_at": datetime.now(timezone.utc).isoformat(),
            }
        )
        for name, data in datasets.items():
            h5.create_dataset(name, data=data)
    return buffer.getvalue()


def _shape_line(step: float, dim: int, count: int) -> bytes:
    return f"{float(step)!r} {int(dim)} {int(count)}".encode()


def decode_shard(data: bytes) -> Shard:
    """Read a shard (format 3, or 2), refusing one whose contents do not match its checksum."""
    try:
        with h5py.File(io.BytesIO(data), "r") as h5:
            attrs = dict(h5.attrs)
            shard_format = attrs.get("format")
            shard_format = shard_format.item() if isinstance(shard_format, np.generic) else shard_format
            if shard_format not in READABLE_FORMATS:
                raise CorruptShard(
                    f"shard format {shard_format!r} is not readable (this version reads formats "
                    f"{', '.join(map(str, READABLE_FORMATS))}): re-index the category from its vectors"
                )
            arrays = {name: h5[name][()] for name in h5.keys()}
    except CorruptShard:
        raise
    except (OSError, KeyError, ValueError) as exc:
        raise CorruptShard(f"unreadable shard: {exc}") from exc
    try:
        if shard_format == 2:
            return _decode_format_2(attrs, arrays)
        codes, low_bits, count, step = arrays["codes"], arrays["low_bits"], int(attrs["count"]), float(attrs["step"])
        id_arrays = {name: arrays[name] for name in ("id_packed", "id_digest", "id_index", "id_text")}
        if _checksum(_shape_line(step, attrs["dim"], count), codes, low_bits, *id_arrays.values()) != attrs["checksum"]:
            raise CorruptShard("shard contents do not match its checksum")
        offsets = low_bit_offsets(codes)
        if len(codes) != count or len(low_bits) != int(offsets[-1]):
            raise CorruptShard("shard codes do not match their count")
        ids = unpack_ids(id_arrays, count)
    except KeyError as exc:
        raise CorruptShard(f"shard lacks {exc}") from exc
    shard = Shard(str(attrs["category"]), ids, codes, model=str(attrs["model"]), low_bits=low_bits, step=step, format=3)
    shard.__dict__["offsets"] = offsets  # the cached property, already computed
    return shard


def _decode_format_2(attrs: dict, arrays: dict) -> Shard:
    """uint8 codes round(x / step) and fixed-width ids: no quarter bits (re-ranked at the bins' centres)."""
    id_bytes, codes = arrays["ids"], arrays["codes"]
    if len(id_bytes) != attrs["count"] or _checksum(codes, id_bytes) != attrs["checksum"]:
        raise CorruptShard("shard contents do not match its checksum")
    ids = np.char.decode(id_bytes, "utf-8").tolist() if len(id_bytes) else []
    step = float(attrs.get("step", QUANT_STEP))
    return Shard(str(attrs["category"]), ids, codes, model=str(attrs["model"]), low_bits=None, step=step, format=2)


class CorruptManifest(ValueError):
    """index/manifest.json that is not a manifest (a local write cut short: see `repair`)."""


def read_manifest(store: ObjectStore) -> tuple[dict, str | None]:
    try:
        data, etag = store.get_with_etag(MANIFEST_KEY)
    except ObjectNotFound:
        return {"shards": {}}, None
    try:
        manifest = json.loads(data)
        if not isinstance(manifest.get("shards"), dict):
            raise ValueError("no shards")
    except (ValueError, AttributeError) as exc:
        raise CorruptManifest(f"{MANIFEST_KEY} is unreadable ({exc}); the next `shazzam` command rebuilds it from the shards") from None
    return manifest, etag


def load_shard(store: ObjectStore, manifest: dict, category: str) -> Shard | None:
    entry = manifest["shards"].get(category)
    return decode_shard(store.get(entry["key"])) if entry else None


ANY_VERSION = object()  # publish's default: merge into whatever version is current


def publish(
    store: ObjectStore,
    category: str,
    add: dict[str, np.ndarray] | None = None,
    drop: set[str] | frozenset[str] = frozenset(),
    model: str | None = None,
    expect_version: str | None | object = ANY_VERSION,
    replace: bool = False,
) -> dict:
    """Merge `add` into and remove `drop` from the category's shard; returns the new manifest entry.
    `replace`: the shard is not read but replaced by `add` alone (it is unreadable).

    `model` names the model that embedded `add`; a shard of another model is replaced rather
    than mixed with it. None keeps the shard's own model (a removal needs no model).
    `expect_version`: the shard version (None: no shard yet) that `add` and `drop` were read
    against; ShardMoved when the manifest names another (an overlapping run published meanwhile,
    so they may be stale). By default they are merged into whatever version is current.
    """
    add = add or {}
    for _attempt in range(PUBLISH_ATTEMPTS):
        manifest, etag = read_manifest(store)
        entry = manifest["shards"].get(category)
        if expect_version is not ANY_VERSION and (entry or {}).get("version") != expect_version:
            raise ShardMoved(category)
        try:
            if replace:
                current = None
            elif model is not None and entry and entry.get("model", model) != model:
                # Replaced whole, so never read: a shard of an older model may be in a format this
                # version no longer reads (a data folder of the first version).
                log.warning("%s shard of model %s is replaced by one of model %s: re-embed its items", category, entry.get("model"), model)
                current = None
            else:
                current = load_shard(store, manifest, category)
        except ObjectNotFound:
            continue  # replaced and collected since the manifest was read: read it again
        if model is None:
            model = current.model if current is not None else "unspecified"
        # Merged as arrays (the rows kept, the rows added, one sort by id), never one Python object
        # per row: a category of 100k+ items must fit the index and revalidate functions' memory.
        kept, step = None, None  # kept: the shard whose items carry over
        if current is not None and current.model == model:
            kept, step = current, current.step
        elif current is not None:
            log.warning("%s shard of model %s is replaced by one of model %s: re-embed its items", category, current.model, model)
        holds = kept is not None and len(kept.ids) > 0
        parts = []  # (ids, scan codes, quarter-bit stream), to merge
        if add:
            dims = Counter(len(vector) for vector in add.values())
            dim = kept.dim if holds else dims.most_common(1)[0][0]
            if set(dims) != {dim}:
                raise WrongDimension(category, sorted(key for key, vector in add.items() if len(vector) != dim), dim)
            added = l2_normalise(np.stack(list(add.values())))
            clipped, coded = (_top_code_count(kept), kept.codes.size) if holds else (0, 0)
            wider = choose_step(added, step, clipped_before=clipped, count_before=coded)
            if step is not None and wider > step and holds:
                # New values beyond the shard's clip: every item moves to the wider grid (rare: once
                # a shard holds a model's range, its step stays).
                log.info("%s shard: code step %.3g -> %.3g", category, step, wider)
            step = wider
            parts.append((list(add), *split_codes(fine_codes(added, step))))
        if holds:
            if kept.low_bits is None or kept.step != step:
                parts.insert(0, (kept.ids, *_recoded(kept, step)))
            else:
                parts.insert(0, (kept.ids, kept.codes, kept.low_bits))
        all_ids = np.array([item for part in parts for item in part[0]], dtype=object)  # the same str objects
        gone = np.fromiter((item in drop for item in all_ids), bool, len(all_ids))
        if holds and add:
            gone[: len(kept.ids)] |= np.fromiter((item in add for item in kept.ids), bool, len(kept.ids))  # replaced by their new vector
        rows = np.flatnonzero(~gone)
        rows = rows[np.argsort(all_ids[rows], kind="stable")]
        ids = all_ids[rows].tolist()
        if len(parts) > 1:
            codes, low_bits = np.concatenate([part[1] for part in parts]), np.concatenate([part[2] for part in parts])
        elif parts:
            codes, low_bits = parts[0][1], parts[0][2]
        else:
            codes, low_bits = np.zeros((0, 0), np.uint8), np.zeros(0, np.uint8)
        # The old shard goes before the new one is taken and encoded: three copies of a large
        # category's codes alive at once pass the function's memory.
        del current, kept, parts
        codes, low_bits = take_rows(codes, low_bits, rows)
        shard = Shard(category, ids, codes, model=model, low_bits=low_bits, step=step or QUANT_STEP)
        version = f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"
        key = f"index/{category}/{version}.h5"
        # Unconditional: the key is new (time and a random part), and a put-if-absent failed its own
        # condition when the SDK re-sent it after a lost reply.
        store.put(key, encode_shard(shard))
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
            # Someone else swapped the manifest first, or this very write did and its reply was
            # lost (the SDK's retry of it then fails its condition): only the manifest can tell.
            if read_manifest(store)[0]["shards"].get(category, {}).get("key") != key:
                store.delete(key)  # never referenced
                log.info("manifest changed while publishing %s; retrying", category)
                continue
        collect_old_versions(store, category, keep=key)
        return entry
    raise RuntimeError(f"could not publish {category}: the manifest kept changing")


def _top_code_count(shard: Shard) -> int:
    """How many of the shard's values sit at the top re-rank code (FINE_MAX: clipped), for
    choose_step; only rows with a top scan code are joined, a block at a time."""
    count = 0
    for start in range(0, len(shard.codes), CHUNK_ROWS):
        rows = start + np.flatnonzero((shard.codes[start : start + CHUNK_ROWS] == 255).any(axis=1))
        if len(rows):
            count += int(np.count_nonzero(join_codes(shard.codes, shard.low_bits, shard.offsets, rows) == FINE_MAX))
    return count


def _recoded(shard: Shard, step: float) -> tuple[np.ndarray, np.ndarray]:
    """The shard's scan codes and quarter-bit stream on `step` (its own or wider), a block of
    rows at a time: a format 2 shard (no quarter bits) or one whose step widens."""
    offsets = shard.offsets if shard.low_bits is not None else None
    codes, pieces = [], []
    for start in range(0, len(shard.codes), CHUNK_ROWS):
        rows = np.arange(start, min(len(shard.codes), start + CHUNK_ROWS))
        fine = join_codes(shard.codes, shard.low_bits, offsets, rows).astype(np.uint16)
        if step != shard.step:
            fine = fine_codes(fine * np.float32(shard.step / 8), step)
        block_codes, block_bits = split_codes(fine)
        codes.append(block_codes)
        pieces.append(block_bits)
    return np.concatenate(codes), np.concatenate(pieces)


def collect_old_versions(store: ObjectStore, category: str, keep: str, grace_s: float = OLD_VERSION_GRACE_S) -> None:
    """Delete the shard versions superseded for longer than the grace period.

    A version is superseded when the next one is published, so its grace runs from the next
    version's time, not its own: a reader that read the manifest just before a swap still finds
    the shard it names, however long that shard was live.
    A version newer than the live one that is older than the grace period was never swapped in
    (a run stopped between writing it and the manifest): it goes too.
    """
    cutoff_ns = time.time_ns() - int(grace_s * 1e9)
    versions = []
    for info in store.list(f"index/{category}/"):
        stamp = info.key.rsplit("/", 1)[-1].split("-", 1)[0]
        if stamp.isdigit():
            versions.append((int(stamp), info.key))
    versions.sort()
    live = next((stamp for stamp, key in versions if key == keep), None)
    for (written_at, key), (superseded_at, _) in zip(versions, [*versions[1:], (None, None)]):
        if key == keep:
            continue
        if live is not None and written_at > live:
            if written_at < cutoff_ns:
                store.delete(key)
        elif superseded_at is not None and superseded_at < cutoff_ns:
            store.delete(key)


def vector_keys(store: ObjectStore, prefix: str = PENDING_PREFIX, suffix: str = ".npy") -> dict[str, list[str]]:
    """`<prefix><category>/<name><suffix>` keys (pending vectors, or removal markers) by category."""
    grouped: dict[str, list[str]] = {}
    for info in store.list(prefix):
        parts = info.key[len(prefix) :].split("/")
        if len(parts) == 2 and parts[1] and parts[1].endswith(suffix):
            grouped.setdefault(parts[0], []).append(info.key)
    return grouped


def compact(store: ObjectStore, model: str, on_merged: Callable[[str, list[str]], None] | None = None,
            on_unmerged: Callable[[str, set[str], set[str]], None] | None = None,
            on_shard_replaced: Callable[[str], None] | None = None) -> dict[str, dict]:
    """One index run: merge pending vectors and removal markers into new shard versions.

    Only the keys it read are deleted, after the manifest that holds them is swapped in, so a
    vector written meanwhile waits for the next run and an overlapping run merges the same ids
    again (a dict by id: no duplicates). A category's shard is published only over the version
    the run began reading from: when an overlapping run published it meanwhile, what this one read
    may be stale (an embed re-filed the item, or a removal followed), so it reads again. `on_merged(category, ids)` records each category's merged
    ids before its keys are deleted: if it fails, or a later category does, the keys stay and the
    next run merges and records them again. Pending vectors of another model than `model` are
    deleted unmerged, and unusable ones set aside (set_aside), once the shard is published and
    `on_unmerged(category, held, not_held)` told the ids of those still as read (not embedded again
    meanwhile), split by whether the published shard still holds an earlier vector of theirs, so
    that their items are embedded again
    (during a rollout, the embed function may already run a model the index does not yet hold).
    A category's shard of another model is replaced whole by one of `model`; `on_shard_replaced(category)`
    is told first, so that the items the replaced shard held are embedded again (whatever model
    embedded them last: switched back before re-embedding ended, an item still embedded by `model`
    was in the replaced shard only). Categories go smallest first (items held and pending): one too
    large for the function's memory kills the run, which no handler can catch, and then only after
    the others are merged; the run still fails, every time, until the function has the memory.
    Returns, per category, the ids added and removed.
    """
    report = {}
    pending, removed = vector_keys(store, PENDING_PREFIX), vector_keys(store, REMOVED_PREFIX, suffix="")
    shards = read_manifest(store)[0]["shards"] if pending or removed else {}
    held = {category: entry.get("count", 0) for category, entry in shards.items()}
    for category in sorted(set(pending) | set(removed), key=lambda name: (held.get(name, 0) + len(pending.get(name, [])), name)):
        for _attempt in range(PUBLISH_ATTEMPTS):
            try:
                report[category] = _compact_category(store, model, category, pending.get(category, []), removed.get(category, []),
                                                     on_merged, on_unmerged, on_shard_replaced)
                break
            except ShardMoved:
                # Another run published this shard since this one began reading: what was read may
                # be stale (a vector it merged, then an embed re-filed or a removal marker dropped).
                log.info("%s shard published by an overlapping run; reading its pending vectors again", category)
                pending, removed = vector_keys(store, PENDING_PREFIX), vector_keys(store, REMOVED_PREFIX, suffix="")
        else:
            raise RuntimeError(f"could not compact {category}: overlapping runs kept publishing it")
    return report


class ShardMoved(Exception):
    """The shard's version is no longer the one a run began from."""


def _compact_category(store: ObjectStore, model: str, category: str, pending: list[str], removed: list[str],
                      on_merged: Callable[[str, list[str]], None] | None,
                      on_unmerged: Callable[[str, set[str], set[str]], None] | None,
                      on_shard_replaced: Callable[[str], None] | None = None) -> dict:
    begun = read_manifest(store)[0]["shards"].get(category) or {}
    begun_from = begun.get("version")  # before reading: see publish's `expect_version`
    # The removal markers' versions before any vector is read: one written again later (the item
    # re-filed out of the category during the run, after the run read its vector) is the next run's.
    markers = {key: head.etag for key in removed if (head := store.head(key)) is not None}
    vectors, read, raw = {}, {}, {}  # read: key -> the ETag of the version merged (or dropped)
    # Not merged: of another model (deleted), or unusable (set aside, with why). Both go only once the
    # shard is published and their items told: a run that stops, or reads again (ShardMoved), before
    # then finds them again.
    other_model: list[str] = []
    unusable: dict[str, Exception] = {}
    for key in pending:
        try:
            data, read[key] = store.get_with_etag(key)
        except ObjectNotFound:
            continue  # merged and deleted by an overlapping run
        try:
            vector, made_by = decode_vector(data)
            check_vector(vector)
        except ValueError as exc:
            unusable[key] = exc
            raw[key_stem(key)] = key, data
            continue
        if made_by != model:
            log.warning("dropping %s: embedded by %s, the index holds %s", key, made_by, model)
            other_model.append(key)
            continue
        vectors[key_stem(key)] = vector
        raw[key_stem(key)] = key, data
    dropped = {key_stem(key) for key in markers} - set(vectors)
    if on_shard_replaced is not None and begun and begun.get("model", model) != model:
        on_shard_replaced(category)  # before the shard goes: a failed call leaves it for the next run
    replace = False
    while True:
        try:
            entry = publish(store, category, add=vectors, drop=dropped, model=model, expect_version=begun_from, replace=replace)
            break
        except WrongDimension as exc:
            for detection_id in exc.ids:
                del vectors[detection_id]
                unusable[raw[detection_id][0]] = exc
        except CorruptShard as exc:
            log.error("the %s shard is unreadable (%s): replaced, and its items embedded again", category, exc)
            if on_shard_replaced is not None:
                on_shard_replaced(category)
            replace = True
    if on_merged is not None:
        on_merged(category, sorted(vectors))
    for key, exc in unusable.items():
        set_aside(store, key, raw[key_stem(key)][1], exc)
    # Told before they go (a run that stops here tells again), and only of those still as read: an
    # item embedded again meanwhile has a newer vector on its way.
    unmerged = {key_stem(key) for key in [*other_model, *unusable] if (head := store.head(key)) is not None and head.etag == read[key]}
    if on_unmerged is not None and unmerged:
        held = unmerged & set(decode_shard(store.get(entry["key"])).ids)  # the rare path pays for a read
        on_unmerged(category, held, unmerged - held)
    for key, etag in read.items():
        delete_if_unchanged(store, key, etag)  # one embedded again meanwhile waits for the next run
    for key, etag in markers.items():
        delete_if_unchanged(store, key, etag)  # one written again meanwhile waits for the next run
    return {"added": sorted(vectors), "removed": sorted(dropped), "total": entry["count"]}


def repair(store: ObjectStore, on_shard_replaced: Callable[[str], None] | None = None) -> list[str]:
    """Mend what a write cut short can leave in a local folder (an S3 write is whole or absent):
    an unreadable manifest is rebuilt from the newest readable version of each category's shard;
    a shard it names that is unreadable or missing is replaced by an empty one; either way, when
    a category's newest shard could not be read, `on_shard_replaced(category)` is told, so that
    its items are embedded again. Versions no manifest will name are collected. Returns what it
    mended, in words."""
    mended = []
    try:
        manifest, etag = read_manifest(store)
    except CorruptManifest as exc:
        log.error("%s", exc)
        shards, damaged = _newest_readable_shards(store)
        manifest, etag = {"shards": shards}, store.head(MANIFEST_KEY).etag
        for category in damaged:
            log.error("the newest %s shard is unreadable: its items are embedded again", category)
            if on_shard_replaced is not None:
                on_shard_replaced(category)
        manifest["updated_at"] = datetime.now(timezone.utc).isoformat()
        body = json.dumps(manifest, indent=2, sort_keys=True).encode()
        store.put(MANIFEST_KEY, body, content_type="application/json", if_match=etag)
        mended.append(f"manifest rebuilt from {len(manifest['shards'])} shard(s)" + (f", {', '.join(damaged)} to embed again" if damaged else ""))
    for category, entry in sorted(manifest["shards"].items()):
        try:
            decode_shard(store.get(entry["key"]))
        except (CorruptShard, ObjectNotFound) as exc:
            log.error("the %s shard %s is unusable (%s): replaced, and its items embedded again", category, entry["key"], exc)
            if on_shard_replaced is not None:
                on_shard_replaced(category)
            entry = publish(store, category, model=entry.get("model"), replace=True)
            mended.append(f"{category} shard replaced")
        collect_old_versions(store, category, keep=entry["key"])
    return mended


def _newest_readable_shards(store: ObjectStore) -> tuple[dict[str, dict], list[str]]:
    """Manifest entries for the newest version of each category's shard that reads, and the
    categories whose newest version does not (their entry, if any, is an older version)."""
    by_category: dict[str, list[str]] = {}
    for info in store.list("index/"):
        parts = info.key[len("index/"):].split("/")
        if len(parts) == 2 and parts[1].endswith(".h5"):
            by_category.setdefault(parts[0], []).append(info.key)
    entries, damaged = {}, []
    for category, keys in sorted(by_category.items()):
        for newest, key in enumerate(sorted(keys, reverse=True)):  # versions begin with their time
            try:
                shard = decode_shard(store.get(key))
            except (CorruptShard, ObjectNotFound):
                continue
            version = key.rsplit("/", 1)[-1].removesuffix(".h5")
            entries[category] = {"key": key, "version": version, "count": len(shard.ids), "model": shard.model}
            if newest:
                damaged.append(category)
            break
        else:
            damaged.append(category)
    return entries, damaged


def check_vector(vector: np.ndarray) -> None:
    """ValueError unless the vector is one embedding a shard can hold: 1-D, finite, with a finite
    norm (a norm that overflows float32 would code it as all zeros)."""
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"a vector must be one row of numbers, not an array of shape {vector.shape}")
    with np.errstate(over="ignore"):
        norm = np.linalg.norm(np.asarray(vector, dtype=np.float32))
    if not np.isfinite(vector).all() or not np.isfinite(norm):
        raise ValueError("a vector with NaN, infinite or overflowing values")


class WrongDimension(ValueError):
    """Vectors to add whose dimension is not the shard's (or, for a new shard, the most common)."""

    def __init__(self, category: str, ids: list[str], dim: int):
        super().__init__(f"{len(ids)} vector(s) for the {category} shard do not have its {dim} dimensions: {ids[:5]}")
        self.ids = ids


def set_aside(store: ObjectStore, key: str, data: bytes, error: Exception) -> None:
    """Keep a copy of an unusable pending vector for a look; the run then deletes the pending one
    (as read: one rewritten since is the next run's), which would fail every run."""
    aside = UNREADABLE_PREFIX + key[len(PENDING_PREFIX):]
    store.put(aside, data)
    log.error("set aside an unusable pending vector %s as %s: %s", key, aside, error)


class ShardReader:
    """Serves searches from shards cached in memory while the manifest says they are current."""

    def __init__(self, store: ObjectStore, manifest_ttl_s: float = 5.0):
        self.store = store
        self.manifest_ttl_s = manifest_ttl_s
        self._lock = threading.Lock()
        self._manifest: dict = {"shards": {}}
        self._manifest_read_at = float("-inf")
        self._shards: dict[str, Shard] = {}  # each served less the rows hidden when it was cached
        self._hidden_lock = threading.Lock()
        self._hidden_key: Hashable = None
        self._hidden: frozenset[str] = NOTHING_HIDDEN
        self._hidden_from: dict[str, frozenset[str]] = {}  # the hidden ids each cached shard was served without

    def manifest(self, refresh: bool = False) -> dict:
        with self._lock:
            if refresh or time.monotonic() - self._manifest_read_at > self.manifest_ttl_s:
                self._manifest, _ = read_manifest(self.store)
                self._manifest_read_at = time.monotonic()
            return self._manifest

    def categories(self, model: str | None = None) -> dict[str, int]:
        """Items per category's shard; with `model`, only the shards it can search (a shard another
        model made answers nothing until it is re-indexed: StaleShard)."""
        shards = sorted(self.manifest()["shards"].items())
        return {category: entry["count"] for category, entry in shards if model is None or entry.get("model") in (None, model)}

    def shard(self, category: str, hidden: Hidden | None = None) -> Shard | None:
        """The live shard of a category, less the `hidden` rows; a corrupt new version is refused
        and the one in service kept."""
        entry = self.manifest()["shards"].get(category)
        if entry is None:
            return None
        hidden_ids = self._hidden_ids(hidden)
        try:
            return self._load(category, entry, hidden_ids)
        except ObjectNotFound:
            # A manifest up to manifest_ttl_s old may name a version collected since: read it again.
            entry = self.manifest(refresh=True)["shards"].get(category)
            return self._load(category, entry, hidden_ids) if entry is not None else None

    def _hidden_ids(self, hidden: Hidden | None) -> frozenset[str]:
        """The ids `hidden` names, read again only when its key changes; the same object while they
        are the same, so that the shards cached without them still serve."""
        if hidden is None:
            return NOTHING_HIDDEN
        # A lock of their own, not the reader's: the read is a catalogue query (seconds with a large
        # shop taken off), which manifest() (/categories) must not wait for, and the searches that
        # come meanwhile wait for this one read rather than each running it again.
        with self._hidden_lock:
            if hidden.key != self._hidden_key:
                ids = hidden.read()
                self._hidden_key = hidden.key
                if ids != self._hidden:
                    self._hidden = ids
            return self._hidden

    def _load(self, category: str, entry: dict, hidden_ids: frozenset[str]) -> Shard:
        with self._lock:
            cached = self._shards.get(category)
            # Compared by identity: the ids change only when read anew, and then differ.
            if cached is None or cached.key != entry["key"] or self._hidden_from.get(category) is not hidden_ids:
                # Hidden rows that show again (a shop brought back) are only in the stored shard.
                try:
                    loaded = decode_shard(self.store.get(entry["key"]))
                except (CorruptShard, ObjectNotFound) as exc:
                    if cached is None:
                        raise
                    log.error("keeping %s in service: %s is unusable (%s)", cached.key, entry["key"], exc)
                    return cached
                loaded.key = entry["key"]
                self._shards[category] = cached = loaded.without(hidden_ids)
                self._hidden_from[category] = hidden_ids
            return cached

    def search(self, category: str, query: np.ndarray, k: int, model: str | None = None,
               hidden: Hidden | None = None) -> list[tuple[str, float]]:
        """Nearest items of a category to one embedding, none of the `hidden` rows; empty for an
        empty or unknown category."""
        return self.search_many(category, np.asarray(query)[np.newaxis], k, model=model, hidden=hidden)[0]

    def search_many(self, category: str, queries: np.ndarray, k: int, model: str | None = None,
                    hidden: Hidden | None = None) -> list[list[tuple[str, float]]]:
        shard = self.shard(category, hidden)
        if shard is None or not shard.ids:
            return [[] for _ in queries]
        if model is not None and shard.model and model != shard.model:
            raise StaleShard(f"query embeddings come from model {model}, the {category} shard from {shard.model}")
        return shard.search_many(queries, k)

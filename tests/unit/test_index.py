"""The sharded index on a LocalFolderStore: encoding, publish/merge/drop, races, search, GC."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from shazzam import index
from shazzam.distance import QUANT_STEP, choose_step, fine_codes, l2_normalise, quantise
from shazzam.index import (
    MANIFEST_KEY,
    Shard,
    ShardReader,
    collect_old_versions,
    compact,
    decode_shard,
    decode_vector,
    encode_shard,
    encode_vector,
    load_shard,
    vector_keys,
    publish,
    read_manifest,
)
from shazzam.storage import LocalFolderStore, PreconditionFailed

DIM = 8


@pytest.fixture
def store(tmp_path):
    return LocalFolderStore(tmp_path / "objects")


def vectors(names, seed=0) -> dict[str, np.ndarray]:
    """Non-negative, like the model's embeddings (pooled ReLU6 features)."""
    rng = np.random.default_rng(seed)
    return {name: np.abs(rng.normal(size=DIM)).astype(np.float32) for name in names}


def shard_keys(store, category):
    return sorted(info.key for info in store.list(f"index/{category}/"))


def live_shard(store, category) -> Shard:
    manifest, _ = read_manifest(store)
    return load_shard(store, manifest, category)


# -- encoding ------------------------------------------------------------------------------


def test_vector_round_trip():
    vector = np.random.default_rng(1).normal(size=128)
    decoded, model = decode_vector(encode_vector(vector, "garment_v7"))
    assert decoded.dtype == np.float32 and model == "garment_v7"
    np.testing.assert_array_equal(decoded, vector.astype(np.float32))


def test_vector_decode_refuses_pickles():
    import io

    buffer = io.BytesIO()
    np.savez(buffer, vector=np.array([{"a": 1}], dtype=object), model=np.array("m"))
    with pytest.raises(ValueError):
        decode_vector(buffer.getvalue())


def test_vectors_of_another_model_never_join_a_shard(store):
    store.put("vectors/pending/top/a-000.npy", encode_vector(np.ones(DIM), "garment_v0"))
    store.put("vectors/pending/top/b-000.npy", encode_vector(np.ones(DIM), "garment_v1"))
    report = index.compact(store, model="garment_v1")
    assert report["top"]["added"] == ["b-000"] and not list(store.list("vectors/pending/"))
    publish(store, "shoes", add=vectors(["old"]), model="garment_v0")
    entry = publish(store, "shoes", add=vectors(["new"]), model="garment_v1")  # a new model: the old vectors go
    assert entry["count"] == 1 and live_shard(store, "shoes").ids == ["new"]


def test_a_shard_of_another_model_is_replaced_unread(store):
    publish(store, "shoes", add=vectors(["old"]), model="garment_v0")
    manifest, _ = read_manifest(store)
    store.put(manifest["shards"]["shoes"]["key"], b"a format this version cannot read")  # a first-version data folder's
    entry = publish(store, "shoes", add=vectors(["new"]), model="garment_v1")
    assert entry["count"] == 1 and live_shard(store, "shoes").ids == ["new"]


def test_shard_round_trip():
    raw = np.abs(np.random.default_rng(2).normal(size=(4, DIM)))
    ids = ["b-001", "a-002", "ünïcode-003", "0123456789abcdef0123456789abcdef01234567-004"]
    shard = Shard.from_vectors("top", ids, raw, model="garment_v9")
    decoded = decode_shard(encode_shard(shard))
    assert decoded.category == "top" and decoded.model == "garment_v9" and decoded.format == index.SHARD_FORMAT
    assert decoded.ids == shard.ids
    assert all(type(i) is str for i in decoded.ids)
    assert decoded.step == shard.step
    np.testing.assert_array_equal(decoded.codes, shard.codes)
    np.testing.assert_array_equal(decoded.fine(), fine_codes(l2_normalise(raw), shard.step))
    assert decoded.codes.dtype == np.uint8


def test_empty_shard_round_trip():
    decoded = decode_shard(encode_shard(Shard("top", [], np.zeros((0, 0), np.uint8), model="m")))
    assert decoded.ids == [] and len(decoded.codes) == 0


def test_a_corrupt_or_truncated_shard_is_refused():
    codes = (np.arange(2 * DIM, dtype=np.uint8).reshape(2, DIM) * 7 + 101).astype(np.uint8)
    data = encode_shard(Shard("top", ["a", "b"], codes, model="m"))
    with pytest.raises(index.CorruptShard):
        decode_shard(data[: len(data) // 2])
    with pytest.raises(index.CorruptShard):
        decode_shard(b"not hdf5 at all")
    position = data.index(codes.tobytes()) + 5  # one flipped bit inside the codes
    tampered = data[:position] + bytes([data[position] ^ 1]) + data[position + 1 :]
    with pytest.raises(index.CorruptShard, match="checksum"):
        decode_shard(tampered)


def test_detection_ids_are_packed_and_other_ids_kept_as_text():
    detection = [f"{i:040x}-{i % 1000:03d}" for i in range(0, 5000, 7)]
    others = ["upload-1-000", "ünïcode-003", "ABCDEF" * 7 + "-001", "0" * 40 + "-1234", ""]
    ids = sorted(detection + others)
    arrays = index.pack_ids(ids)
    assert arrays["id_digest"].shape == (len(detection), 20) and arrays["id_index"].dtype == np.uint16
    assert index.unpack_ids(arrays, len(ids)) == ids
    with pytest.raises(ValueError, match="newline"):
        index.pack_ids(["a\nb"])


def test_bytes_per_item_of_a_192_dimension_shard_stay_under_256():
    rng = np.random.default_rng(4)
    n = 20_000
    ids = [f"{i:040x}-000" for i in range(n)]
    data = encode_shard(Shard.from_vectors("top", ids, np.maximum(rng.normal(size=(n, 192)), 0), model="m"))
    # codes, quarter bits (2 a non-zero value: half of these are 0), id; the file's own overhead is small
    assert len(data) / n <= 192 + 192 / 8 + 22 + 1


def test_format_2_shards_are_read_and_rewritten_by_the_next_publish(store):
    import io

    import h5py

    raw = {name: np.abs(np.random.default_rng(i).normal(size=256)) for i, name in enumerate(["a-000", "b-000"])}
    codes = np.clip(np.rint(l2_normalise(np.stack(list(raw.values()))) / QUANT_STEP), 0, 255).astype(np.uint8)
    id_bytes = np.array([name.encode() for name in raw], dtype=np.bytes_)
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:  # as the previous version wrote them
        h5.attrs.update({"format": 2, "category": "top", "model": "m", "dim": 256, "count": 2, "metric": "l1",
                         "quantisation": "uint8", "step": QUANT_STEP, "checksum": index._checksum(codes, id_bytes)})
        h5.create_dataset("ids", data=id_bytes)
        h5.create_dataset("codes", data=codes)
    store.put("index/top/00000000000000000001-old.h5", buffer.getvalue())
    store.put(MANIFEST_KEY, json.dumps({"shards": {"top": {"key": "index/top/00000000000000000001-old.h5", "count": 2, "model": "m"}}}).encode())
    old = ShardReader(store, manifest_ttl_s=0).shard("top")
    assert old.format == 2 and old.ids == ["a-000", "b-000"]
    np.testing.assert_array_equal(old.fine(), codes.astype(np.uint16) * 8)  # the centres of the bins
    assert ShardReader(store, manifest_ttl_s=0).search("top", raw["b-000"], 1) == [("b-000", 0.0)]
    publish(store, "top", add={"c-000": np.abs(np.random.default_rng(9).normal(size=256))}, model="m")
    new = live_shard(store, "top")
    assert new.format == 3 and new.ids == ["a-000", "b-000", "c-000"]
    np.testing.assert_array_equal(new.codes[:2], codes)  # carried over at the precision they had


def test_format_1_and_unknown_formats_are_refused_with_a_clear_error():
    import io

    import h5py

    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as h5:
        h5.attrs.update({"format": 1, "category": "top"})
    with pytest.raises(index.CorruptShard, match="format 1 is not readable.*re-index"):
        decode_shard(buffer.getvalue())


def test_a_wider_step_regrids_the_shard(store):
    small = {f"s{i}": np.ones(256) for i in range(3)}  # every value 1/16: inside the default clip
    publish(store, "top", add=small)
    assert live_shard(store, "top").step == QUANT_STEP
    spiky = np.full(256, 0.01)
    spiky[:4] = 1.0  # normalised values near 0.5: beyond 0.25, but too few to move the step
    publish(store, "top", add={"x": spiky})
    assert live_shard(store, "top").step == QUANT_STEP
    spiky[:10] = 0.6  # now 10 of 1,024 values: the step widens

    publish(store, "top", add={"x": spiky})
    shard = live_shard(store, "top")
    assert shard.step > QUANT_STEP and shard.step * 255.5 >= l2_normalise(spiky).max()  # no value clipped
    results = ShardReader(store, manifest_ttl_s=0).search("top", np.ones(256), 4)
    assert [name for name, _ in results[:3]] == ["s0", "s1", "s2"]
    assert results[0][1] == pytest.approx(0.0, abs=256 * shard.step / 4)
    assert results[3][0] == "x" and results[3][1] == pytest.approx(
        np.abs(l2_normalise(spiky) - l2_normalise(np.ones(256))).sum(), abs=256 * shard.step / 4
    )


def test_a_shard_whose_step_or_quarter_bits_were_changed_is_refused():
    import io

    import h5py

    shard = Shard.from_vectors("top", ["a", "b"], np.abs(np.random.default_rng(6).normal(size=(2, 64))), model="m")
    for name, change in (("step", lambda h5: h5.attrs.__setitem__("step", 2 * shard.step)),
                         ("low_bits", lambda h5: h5["low_bits"].__setitem__(0, h5["low_bits"][0] ^ 1))):
        buffer = io.BytesIO(encode_shard(shard))
        with h5py.File(buffer, "r+") as h5:
            change(h5)
        with pytest.raises(index.CorruptShard, match="checksum"):
            decode_shard(buffer.getvalue())


def test_a_corrupt_new_version_leaves_the_old_one_in_service(store):
    publish(store, "top", add=vectors(["a"]))
    reader = ShardReader(store, manifest_ttl_s=0)
    assert [name for name, _ in reader.search("top", np.ones(DIM), 3)] == ["a"]
    entry = publish(store, "top", add=vectors(["b"], seed=1))
    store.put(entry["key"], b"torn write")  # as if the new version were damaged
    assert [name for name, _ in reader.search("top", np.ones(DIM), 3)] == ["a"]
    with pytest.raises(index.CorruptShard):
        ShardReader(store, manifest_ttl_s=0).search("top", np.ones(DIM), 3)  # nothing older to fall back on


def test_queries_of_the_wrong_dimension_or_model_are_refused(store):
    publish(store, "top", add=vectors(["a"]), model="garment_v0")
    reader = ShardReader(store, manifest_ttl_s=0)
    with pytest.raises(ValueError, match="dimensions"):
        reader.search("top", np.ones(DIM + 1), 3)
    with pytest.raises(ValueError, match="model garment_v9"):
        reader.search("top", np.ones(DIM), 3, model="garment_v9")
    assert reader.search("top", np.ones(DIM), 3, model="garment_v0")[0][0] == "a"


# -- publish -------------------------------------------------------------------------------


def test_first_publish_creates_manifest_and_shard(store):
    add = vectors(["d1", "d2", "d3"])
    entry = publish(store, "top", add=add, model="garment_v1")
    manifest, etag = read_manifest(store)
    assert etag is not None
    assert manifest["shards"] == {"top": entry}
    assert entry["count"] == 3 and entry["model"] == "garment_v1"
    assert entry["key"] == f"index/top/{entry['version']}.h5"
    assert shard_keys(store, "top") == [entry["key"]]
    shard = live_shard(store, "top")
    assert shard.ids == ["d1", "d2", "d3"]
    # normalised, then coded on the shard's step (8 dimensions: values beyond 0.25 widen it)
    assert shard.step == choose_step(l2_normalise(np.stack(list(add.values())))) > QUANT_STEP
    np.testing.assert_array_equal(shard.fine()[1], fine_codes(l2_normalise(add["d2"]), shard.step))
    np.testing.assert_array_equal(shard.codes[1], quantise(l2_normalise(add["d2"]), shard.step))


def test_second_publish_merges_and_overrides(store):
    publish(store, "top", add=vectors(["d1", "d2"], seed=1))
    replacement = vectors(["d2", "d3"], seed=2)
    entry = publish(store, "top", add=replacement)
    shard = live_shard(store, "top")
    assert shard.ids == ["d1", "d2", "d3"] and entry["count"] == 3
    np.testing.assert_array_equal(shard.fine()[1], fine_codes(l2_normalise(replacement["d2"]), shard.step))
    # The first version is within its grace period, so it stays for readers that still hold it.
    assert len(shard_keys(store, "top")) == 2


def test_drop_removes_ids(store):
    publish(store, "top", add=vectors(["d1", "d2", "d3"]))
    entry = publish(store, "top", drop={"d2", "never-there"})
    assert live_shard(store, "top").ids == ["d1", "d3"] and entry["count"] == 2
    entry = publish(store, "top", drop={"d1", "d3"})
    assert entry["count"] == 0 and live_shard(store, "top").ids == []
    assert ShardReader(store, manifest_ttl_s=0).search("top", np.ones(DIM), 5) == []


def test_one_publish_adds_replaces_and_drops_in_id_order(store):
    first = vectors([f"d{i}" for i in range(0, 20, 2)] + ["x"], seed=1)
    publish(store, "top", add=first)
    second = vectors(["d4", "d5", "d11", "d12", "d30"], seed=2)  # d4, d12 replaced; d30 dropped as it comes
    entry = publish(store, "top", add=second, drop={"d0", "d30", "x", "never-there"})
    shard = live_shard(store, "top")
    latest = {**first, **second}
    expected = sorted(set(latest) - {"d0", "d30", "x"})
    assert shard.ids == expected and entry["count"] == len(expected)
    np.testing.assert_array_equal(shard.fine(), fine_codes(l2_normalise(np.stack([latest[name] for name in expected])), shard.step))


def test_publish_merges_a_large_shard_in_a_small_multiple_of_its_size(store):
    """A publish once held a Python object and several int32/uint16 copies per item, over 20 times
    the shard, then the old shard's codes, their copy and the new ones at once, 4 times: now the
    stored bytes and the decoded shard, or the new shard and its encoding, about 3."""
    import tracemalloc

    count, dim = 20_000, 192
    raw = np.maximum(np.random.default_rng(0).normal(-0.3, 1, (count, dim)), 0).astype(np.float32)
    names = [f"{i:040x}-000" for i in range(count)]
    entry = publish(store, "top", add=dict(zip(names, raw)), model="m")
    shard_bytes = len(store.get(entry["key"]))
    tracemalloc.start()
    try:
        publish(store, "top", add={names[1]: raw[2], "f" * 40 + "-000": raw[3]}, drop={names[5]}, model="m")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert live_shard(store, "top").ids[:3] == [names[0], names[1], names[2]] and entry["count"] == count
    assert peak < 3.5 * shard_bytes, f"peak {peak >> 20} MB for a shard of {shard_bytes >> 20} MB"


def test_categories_are_independent(store):
    publish(store, "top", add=vectors(["t1"]))
    publish(store, "shoes", add=vectors(["s1", "s2"]))
    publish(store, "top", drop={"t1"})
    manifest, _ = read_manifest(store)
    assert {c: e["count"] for c, e in manifest["shards"].items()} == {"top": 0, "shoes": 2}
    assert ShardReader(store, manifest_ttl_s=0).categories() == {"shoes": 2, "top": 0}


def test_search_returns_the_exact_nearest(store):
    rng = np.random.default_rng(3)
    dim = 256  # enough dimensions that, as for real embeddings, normalised values stay under the clip
    names = [f"d{i:03d}" for i in range(300)]
    raw = np.abs(rng.normal(size=(300, dim))).astype(np.float32)
    publish(store, "top", add=dict(zip(names[:150], raw[:150])))
    publish(store, "top", add=dict(zip(names[150:], raw[150:])))
    reader = ShardReader(store, manifest_ttl_s=0)
    assert reader.shard("top").step == QUANT_STEP
    fine = fine_codes(l2_normalise(raw)).astype(np.int64)
    for _ in range(5):
        query = np.abs(rng.normal(size=dim)).astype(np.float32)
        results = reader.search("top", query * 7.5, 10)  # the query's scale does not matter
        # the nearest by the re-rank codes, reported as code distance x step / 8
        expected = np.abs(fine - fine_codes(l2_normalise(query)).astype(np.int64)).sum(axis=1)
        order = np.lexsort((np.arange(300), expected))[:10]
        assert [name for name, _ in results] == [names[i] for i in order]
        np.testing.assert_allclose([d for _, d in results], expected[order] * QUANT_STEP / 8, rtol=1e-6)
        float_distances = np.abs(l2_normalise(raw) - l2_normalise(query)).sum(axis=1)[order]
        np.testing.assert_allclose([d for _, d in results], float_distances, atol=dim * QUANT_STEP / 2)
    assert reader.search("unknown", np.ones(dim), 3) == []


def test_search_matches_exact_float_l1_on_clustered_embeddings(store):
    """Recall against exact float32 L1, through publish and the reader, on garment-like data."""
    from shazzam.bench_search import exact_float_topk, garment_like_embeddings

    rng = np.random.default_rng(5)
    vectors = garment_like_embeddings(4000 + 20, rng, 128)
    items, queries = vectors[:4000], vectors[4000:]
    names = [f"{i:040x}-000" for i in range(4000)]  # sorted, so rows keep their order
    publish(store, "top", add=dict(zip(names, items)))
    results = ShardReader(store, manifest_ttl_s=0).search_many("top", queries, 10)
    truth = exact_float_topk(items, queries)
    found = [[int(name[:40], 16) for name, _ in result] for result in results]
    assert np.mean([len(set(a) & set(b)) / 10 for a, b in zip(found, truth)]) >= 0.98
    for result, query in zip(results, queries):  # reported distances: L1 within rounding
        rows = [int(name[:40], 16) for name, _ in result]
        exact = np.abs(items[rows] - query).sum(axis=1)
        np.testing.assert_allclose([d for _, d in result], exact, atol=0.01)


def test_reader_follows_a_new_manifest(store):
    reader = ShardReader(store, manifest_ttl_s=0)
    publish(store, "top", add={"a": np.eye(DIM)[0]})
    assert [name for name, _ in reader.search("top", np.eye(DIM)[1], 5)] == ["a"]
    publish(store, "top", add={"b": np.eye(DIM)[1]})
    assert [name for name, _ in reader.search("top", np.eye(DIM)[1], 5)] == ["b", "a"]


def test_reader_caches_the_manifest_within_its_ttl(store):
    publish(store, "top", add={"a": np.eye(DIM)[0]})
    reader = ShardReader(store, manifest_ttl_s=3600)
    assert reader.categories() == {"top": 1}
    publish(store, "top", add={"b": np.eye(DIM)[1]})
    assert reader.categories() == {"top": 1}  # still the cached manifest
    assert ShardReader(store, manifest_ttl_s=0).categories() == {"top": 2}



def test_reader_skips_hidden_rows_and_reads_them_again_only_when_their_key_changes(store):
    publish(store, "top", add=vectors(["a", "b", "c", "d"]))
    reader, reads = ShardReader(store, manifest_ttl_s=0), []

    def hidden(key, ids):
        return index.Hidden(key, lambda: reads.append(key) or frozenset(ids))

    query = vectors(["a"])["a"]
    everything = reader.search("top", query, 4)
    assert reader.search("top", query, 4, hidden=hidden("off", {"a", "c"})) == [hit for hit in everything if hit[0] in ("b", "d")]
    assert reader.search("top", query, 4, hidden=hidden("off", {"b"})) == [hit for hit in everything if hit[0] in ("b", "d")]
    assert reads == ["off"]  # the same key: the ids read before
    assert reader.search("top", query, 4, hidden=hidden("back", set())) == everything  # rows shown again
    assert reader.shard("top").ids == ["a", "b", "c", "d"]
    assert reader.search("top", query, 4, hidden=hidden("all off", {"a", "b", "c", "d"})) == []


def test_reader_reads_hidden_rows_without_holding_up_the_manifest(store):
    # The read is a catalogue query (seconds with a large shop taken off): /categories must not wait.
    publish(store, "top", add=vectors(["a", "b"]))
    reader, waited = ShardReader(store, manifest_ttl_s=0), []

    def read():
        categories = threading.Thread(target=lambda: waited.append(reader.categories()))
        categories.start()
        categories.join(timeout=5)
        return frozenset({"a"}) if waited else frozenset()

    assert [item for item, _ in reader.search("top", vectors(["a"])["a"], 2, hidden=index.Hidden("off", read))] == ["b"]
    assert waited == [{"top": 2}]


# -- old versions --------------------------------------------------------------------------


def test_old_versions_are_collected_after_the_grace(store):
    for i in range(3):
        entry = publish(store, "top", add=vectors([f"d{i}"], seed=i))
    publish(store, "shoes", add=vectors(["s"]))
    assert len(shard_keys(store, "top")) == 3
    collect_old_versions(store, "top", keep=entry["key"], grace_s=3600)
    assert len(shard_keys(store, "top")) == 3  # still within the grace
    collect_old_versions(store, "top", keep=entry["key"], grace_s=0)
    assert shard_keys(store, "top") == [entry["key"]]
    assert len(shard_keys(store, "shoes")) == 1  # other categories untouched
    assert live_shard(store, "top").ids == ["d0", "d1", "d2"]


def test_publish_collects_versions_past_the_grace(store, monkeypatch):
    first = publish(store, "top", add=vectors(["d1"]))
    # As if the grace had passed by the time of the next publish.
    monkeypatch.setattr(
        index, "collect_old_versions",
        lambda store, category, keep, grace_s=0: collect_old_versions(store, category, keep, grace_s),
    )
    second = publish(store, "top", add=vectors(["d2"]))
    assert shard_keys(store, "top") == [second["key"]]
    assert first["key"] != second["key"]


def test_a_long_live_version_keeps_its_grace_once_superseded(store, monkeypatch):
    now = time.time_ns()
    monkeypatch.setattr(index.time, "time_ns", lambda: now - 20 * 60 * 10**9)  # 20 minutes ago
    old = publish(store, "top", add=vectors(["d1"]))
    monkeypatch.setattr(index.time, "time_ns", lambda: now)
    new = publish(store, "top", add=vectors(["d2"]))
    # Superseded just now: a reader that read the manifest before the swap still finds it.
    assert shard_keys(store, "top") == [old["key"], new["key"]]
    monkeypatch.setattr(index.time, "time_ns", lambda: now + 1)
    collect_old_versions(store, "top", keep=new["key"], grace_s=0)
    assert shard_keys(store, "top") == [new["key"]]


def test_a_reader_whose_manifest_names_a_collected_version_reads_the_manifest_again(store):
    publish(store, "top", add={"a": np.eye(DIM)[0]})
    reader = ShardReader(store, manifest_ttl_s=3600)
    reader.manifest()  # a cold search function read it...
    new = publish(store, "top", add={"b": np.eye(DIM)[1]})
    collect_old_versions(store, "top", keep=new["key"], grace_s=0)  # ...and its version is gone
    assert [name for name, _ in reader.search("top", np.eye(DIM)[1], 5)] == ["b", "a"]


def test_publish_reads_again_when_the_shard_it_read_is_collected_meanwhile(store, monkeypatch):
    publish(store, "top", add=vectors(["t1"]))
    read = index.read_manifest

    def rival_swaps_and_collects(store_):
        manifest = read(store_)
        monkeypatch.setattr(index, "read_manifest", read)
        rival = publish(store_, "top", add=vectors(["t2"], seed=1))
        collect_old_versions(store_, "top", keep=rival["key"], grace_s=0)
        return manifest

    monkeypatch.setattr(index, "read_manifest", rival_swaps_and_collects)
    entry = publish(store, "top", add=vectors(["t3"], seed=2))
    assert live_shard(store, "top").ids == ["t1", "t2", "t3"]
    assert read_manifest(store)[0]["shards"]["top"] == entry


class LostReplyStore(LocalFolderStore):
    """A write succeeds but its reply is lost; the SDK sends it again, as S3's client does, and a
    conditional write's retry then fails its condition against the object the first one made."""

    lose_next_reply = False
    lose_reply_of = MANIFEST_KEY  # the key's prefix

    def put(self, key, data, **kwargs):
        etag = super().put(key, data, **kwargs)
        if key.startswith(self.lose_reply_of) and self.lose_next_reply:
            self.lose_next_reply = False
            return self.put(key, data, **kwargs)
        return etag


@pytest.mark.parametrize("first_publish", [False, True], ids=["no-manifest-yet", "existing-manifest"])
def test_a_manifest_write_whose_reply_was_lost_keeps_its_shard(tmp_path, first_publish):
    store = LostReplyStore(tmp_path / "objects")
    if first_publish:
        publish(store, "top", add=vectors(["t1"]))
    store.lose_next_reply = True
    entry = publish(store, "top", add=vectors(["t2"], seed=1))
    assert read_manifest(store)[0]["shards"]["top"] == entry
    assert live_shard(store, "top").ids == (["t1", "t2"] if first_publish else ["t2"])
    assert ShardReader(store).shard("top").ids == live_shard(store, "top").ids
    assert publish(store, "top", add=vectors(["t3"], seed=2))["count"] == (3 if first_publish else 2)


def test_a_shard_write_whose_reply_was_lost_is_published(tmp_path):
    store = LostReplyStore(tmp_path / "objects")
    publish(store, "top", add=vectors(["t1"]))
    store.lose_next_reply, store.lose_reply_of = True, "index/top/"
    entry = publish(store, "top", add=vectors(["t2"], seed=1))
    assert read_manifest(store)[0]["shards"]["top"] == entry and live_shard(store, "top").ids == ["t1", "t2"]


# -- races ---------------------------------------------------------------------------------


class RacingStore(LocalFolderStore):
    """Before the first manifest swap, lets another publisher win the race."""

    def __init__(self, root, rival):
        super().__init__(root)
        self.rival = rival
        self.raced = False
        self.deleted: list[str] = []

    def put(self, key, data, **kwargs):
        if key == MANIFEST_KEY and not self.raced:
            self.raced = True
            self.rival(LocalFolderStore(self.root))
        return super().put(key, data, **kwargs)

    def delete(self, key):
        self.deleted.append(key)
        super().delete(key)


@pytest.mark.parametrize("first_publish", [False, True], ids=["no-manifest-yet", "existing-manifest"])
def test_a_lost_manifest_race_is_retried_without_losing_vectors(tmp_path, first_publish):
    root = tmp_path / "objects"
    if first_publish:
        publish(LocalFolderStore(root), "shoes", add=vectors(["s0"]))
    rival_entries = []
    store = RacingStore(root, rival=lambda other: rival_entries.append(publish(other, "shoes", add=vectors(["s1"]))))
    entry = publish(store, "top", add=vectors(["t1", "t2"]))

    assert store.raced and rival_entries
    manifest, _ = read_manifest(store)
    assert manifest["shards"]["top"] == entry
    assert manifest["shards"]["shoes"] == rival_entries[0]  # the rival's swap was not overwritten
    assert live_shard(store, "top").ids == ["t1", "t2"]
    assert live_shard(store, "shoes").ids == (["s0", "s1"] if first_publish else ["s1"])
    # The losing attempt's shard version was never referenced, and is gone.
    (orphan,) = [key for key in store.deleted if key.startswith("index/top/")]
    assert orphan != entry["key"]
    assert shard_keys(store, "top") == [entry["key"]]


def test_publish_gives_up_when_the_manifest_keeps_changing(store, monkeypatch):
    original = store.put

    def always_lose(key, data, **kwargs):
        if key == MANIFEST_KEY:
            raise PreconditionFailed(key)
        return original(key, data, **kwargs)

    monkeypatch.setattr(store, "put", always_lose)
    with pytest.raises(RuntimeError, match="could not publish top"):
        publish(store, "top", add=vectors(["t1"]))
    assert shard_keys(store, "top") == []  # every attempt cleaned up its shard


def test_concurrent_publishers_keep_every_id(store):
    errors = []
    start = threading.Barrier(4)

    def publisher(worker):
        try:
            start.wait()
            for batch in range(2):
                names = [f"w{worker}-b{batch}-{i}" for i in range(3)]
                publish(store, "top", add=vectors(names, seed=worker * 10 + batch))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=publisher, args=(worker,)) for worker in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    shard = live_shard(store, "top")
    assert len(shard.ids) == 4 * 2 * 3
    assert set(shard.ids) == {f"w{w}-b{b}-{i}" for w in range(4) for b in range(2) for i in range(3)}
    assert read_manifest(store)[0]["shards"]["top"]["count"] == 24


# -- pending vectors -----------------------------------------------------------------------


def test_pending_vectors_group_by_category(store):
    keys = {
        "top": ["vectors/pending/top/a-000.npy", "vectors/pending/top/b-001.npy"],
        "shoes": ["vectors/pending/shoes/c-000.npy"],
    }
    for category_keys in keys.values():
        for key in category_keys:
            store.put(key, encode_vector(np.ones(DIM), "m"))
    store.put("vectors/pending/top/notes.txt", b"ignored")
    store.put("vectors/pending/loose.npy", b"ignored")
    store.put("vectors/pending/top/deeper/x.npy", b"ignored")
    store.put("vectors/done/top/d.npy", b"ignored")
    grouped = vector_keys(store)
    assert {category: sorted(found) for category, found in grouped.items()} == keys
    assert vector_keys(LocalFolderStore(store.root.parent / "empty")) == {}


def test_a_vector_rewritten_during_a_run_waits_for_the_next(store, monkeypatch):
    key = "vectors/pending/top/a-000.npy"
    store.put(key, encode_vector(np.eye(DIM)[0], "m"))
    publish_ = index.publish

    def embedded_again_meanwhile(store_, category, **kwargs):
        store_.put(key, encode_vector(np.eye(DIM)[1], "m"))  # a new photo of the item, embedded
        return publish_(store_, category, **kwargs)

    monkeypatch.setattr(index, "publish", embedded_again_meanwhile)
    assert compact(store, "m")["top"]["added"] == ["a-000"]
    monkeypatch.setattr(index, "publish", publish_)
    assert decode_vector(store.get(key))[0][1] == 1  # not deleted: the run read the older one
    compact(store, "m")
    assert not list(store.list("vectors/pending/"))
    assert [name for name, _ in ShardReader(store).search("top", np.eye(DIM)[1], 1)] == ["a-000"]


def test_a_vector_written_again_with_the_same_bytes_during_a_run_waits_for_the_next(store, monkeypatch):
    """An embed event delivered twice, or an item re-filed and filed back: the same embedding
    written again after the run read it. The run's conditional delete must not take it for the
    version it merged (an MD5 ETag of the same bytes would match)."""
    key = "vectors/pending/top/a-000.npy"
    store.put(key, encode_vector(np.eye(DIM)[0], "m"))
    publish_ = index.publish

    def written_again_meanwhile(store_, category, **kwargs):
        store_.put(key, encode_vector(np.eye(DIM)[0], "m"))
        return publish_(store_, category, **kwargs)

    monkeypatch.setattr(index, "publish", written_again_meanwhile)
    merged = []
    compact(store, "m", on_merged=lambda _category, added: merged.append(added))
    monkeypatch.setattr(index, "publish", publish_)
    assert store.head(key) is not None  # left for the next run, which records it again
    compact(store, "m", on_merged=lambda _category, added: merged.append(added))
    assert merged == [["a-000"], ["a-000"]] and not list(store.list("vectors/pending/"))


def test_a_vector_written_before_vectors_carried_a_token_still_reads():
    decoded, model = decode_vector(npz(vector=np.ones(DIM, np.float32), model=np.array("m")))
    assert model == "m" and decoded.tolist() == [1.0] * DIM


def npz(**entries) -> bytes:
    import io

    buffer = io.BytesIO()
    np.savez(buffer, **entries)
    return buffer.getvalue()


def bare_npy() -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, np.ones(DIM, np.float32))  # as pending vectors were written before they named their model
    return buffer.getvalue()


UNREADABLE_VECTORS = {
    "not-a-vector": b"truncated by a crash",
    "cut-archive": encode_vector(np.ones(DIM), "m")[:200],
    "bare-npy": bare_npy(),
    "no-model": npz(vector=np.ones(DIM, np.float32)),
}


@pytest.mark.parametrize("data", UNREADABLE_VECTORS.values(), ids=UNREADABLE_VECTORS.keys())
def test_an_unreadable_pending_vector_is_set_aside_and_the_run_goes_on(store, data):
    store.put("vectors/pending/top/a-000.npy", encode_vector(np.eye(DIM)[0], "m"))
    store.put("vectors/pending/top/b-000.npy", data)
    store.put("vectors/pending/shoes/c-000.npy", encode_vector(np.eye(DIM)[1], "m"))
    unmerged = []
    report = compact(store, "m", on_unmerged=lambda *told: unmerged.append(told))
    assert report["top"]["added"] == ["a-000"] and report["shoes"]["added"] == ["c-000"]
    assert unmerged == [("top", set(), {"b-000"})]  # its item is embedded again
    assert not list(store.list("vectors/pending/"))
    assert store.get("vectors/unreadable/top/b-000.npy") == data  # kept for a look
    assert compact(store, "m") == {}  # and the next run is not stuck on it


def test_an_unusable_vector_read_by_a_run_an_overlapping_one_outpaced_is_still_set_aside_and_told(store, monkeypatch):
    publish(store, "top", add=vectors(["a-000"]), model="m")
    store.put("vectors/pending/top/b-000.npy", b"truncated by a crash")
    read = store.get_with_etag

    def overlapping_publish_meanwhile(key):
        if key.startswith("vectors/pending/"):
            monkeypatch.setattr(store, "get_with_etag", read)
            publish(store, "top", drop={"a-000"})  # revalidate drops a dead item: this run reads again
        return read(key)

    monkeypatch.setattr(store, "get_with_etag", overlapping_publish_meanwhile)
    unmerged = []
    compact(store, "m", on_unmerged=lambda *told: unmerged.append(told))
    assert unmerged == [("top", set(), {"b-000"})] and [info.key for info in store.list("vectors/unreadable/")] == ["vectors/unreadable/top/b-000.npy"]


def test_an_unusable_vector_rewritten_while_a_run_read_it_is_not_told_and_its_new_one_merges(store, monkeypatch):
    store.put("vectors/pending/top/b-000.npy", b"truncated by a crash")
    read = store.get_with_etag

    def embedded_again_meanwhile(key):
        found = read(key)
        if key.startswith("vectors/pending/"):
            monkeypatch.setattr(store, "get_with_etag", read)
            store.put(key, encode_vector(np.eye(DIM)[0], "m"))
        return found

    monkeypatch.setattr(store, "get_with_etag", embedded_again_meanwhile)
    unmerged = []
    compact(store, "m", on_unmerged=lambda *told: unmerged.append(told))
    assert unmerged == []  # its row says a newer vector is on its way
    assert compact(store, "m")["top"]["added"] == ["b-000"]


def test_unmerged_vectors_whose_telling_failed_are_told_by_the_next_run(store):
    store.put("vectors/pending/top/b-000.npy", b"truncated by a crash")
    store.put("vectors/pending/top/c-000.npy", encode_vector(np.ones(DIM), "another model"))

    def database_down(*_told):
        raise ConnectionError("the database went away")

    with pytest.raises(ConnectionError):
        compact(store, "m", on_unmerged=database_down)
    unmerged = []
    compact(store, "m", on_unmerged=lambda *told: unmerged.append(told))
    assert unmerged == [("top", set(), {"b-000", "c-000"})] and not list(store.list("vectors/pending/"))


def test_an_unmerged_vector_is_told_whether_the_shard_holds_an_earlier_one_of_its_item(store):
    publish(store, "top", add=vectors(["a-000"]), model="m")
    store.put("vectors/pending/top/a-000.npy", b"truncated by a crash")  # the item embedded again
    store.put("vectors/pending/top/b-000.npy", encode_vector(np.ones(DIM), "another model"))
    unmerged = []
    compact(store, "m", on_unmerged=lambda *told: unmerged.append(told))
    assert unmerged == [("top", {"a-000"}, {"b-000"})]


@pytest.mark.parametrize(
    "bad",
    [np.ones(DIM - 1), np.ones((2, DIM)), np.full(DIM, np.nan), np.r_[np.inf, np.ones(DIM - 1)], np.full(DIM, 1e20)],
    ids=["another-dimension", "two-rows", "nan", "infinite", "norm-overflows"],
)
def test_a_pending_vector_no_shard_can_hold_is_set_aside_and_the_run_goes_on(store, bad):
    store.put("vectors/pending/dress/a-000.npy", encode_vector(np.eye(DIM)[0], "m"))
    store.put("vectors/pending/dress/b-000.npy", encode_vector(np.asarray(bad, dtype=np.float32), "m"))
    store.put("vectors/pending/shoes/c-000.npy", encode_vector(np.eye(DIM)[1], "m"))
    report = compact(store, "m")
    assert report["dress"]["added"] == ["a-000"] and report["shoes"]["added"] == ["c-000"]
    assert [info.key for info in store.list("vectors/unreadable/")] == ["vectors/unreadable/dress/b-000.npy"]
    assert not list(store.list("vectors/pending/")) and compact(store, "m") == {}


def test_a_vector_of_another_dimension_than_the_live_shard_is_set_aside(store):
    publish(store, "top", add=vectors(["a-000"]), model="m")
    store.put("vectors/pending/top/b-000.npy", encode_vector(np.ones(DIM + 1), "m"))
    store.put("vectors/pending/top/c-000.npy", encode_vector(np.eye(DIM)[2], "m"))
    assert compact(store, "m")["top"] == {"added": ["c-000"], "removed": [], "total": 2}
    assert [info.key for info in store.list("vectors/unreadable/")] == ["vectors/unreadable/top/b-000.npy"]


def test_a_query_that_is_not_finite_is_refused(store):
    publish(store, "top", add=vectors(["a-000"]))
    with pytest.raises(ValueError, match="NaN"):
        ShardReader(store).search("top", np.full(DIM, np.nan), 1)  # else every item is at distance 0


def test_manifest_is_json_with_every_category(store):
    publish(store, "top", add=vectors(["t"]))
    publish(store, "shoes", add=vectors(["s"]))
    manifest = json.loads(store.get(MANIFEST_KEY))
    assert set(manifest["shards"]) == {"top", "shoes"}
    assert "updated_at" in manifest
    versions = [entry["version"] for entry in manifest["shards"].values()]
    assert all(int(v.split("-")[0]) <= time.time_ns() for v in versions)


def test_replacing_a_shard_of_another_model_is_told_first_so_its_items_are_embedded_again(store):
    publish(store, "top", add=vectors(["a-000", "b-000"]), model="old")
    replaced = []
    store.put("vectors/pending/top/c-000.npy", encode_vector(np.eye(DIM)[2], "new"))
    assert compact(store, "new", on_shard_replaced=lambda category: replaced.append(category))["top"]["total"] == 1
    assert replaced == ["top"]  # a-000 and b-000 were in the replaced shard only
    store.put("vectors/pending/top/d-000.npy", encode_vector(np.eye(DIM)[3], "new"))
    compact(store, "new", on_shard_replaced=lambda category: replaced.append(category))
    assert replaced == ["top"]  # the same model's shard is merged into, not replaced


def cut_short(store, key):
    """What a power cut leaves of a file written without a flush: its first half, or nothing."""
    path = store.root / key
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_an_unreadable_shard_is_replaced_and_the_other_categories_are_indexed(store):
    publish(store, "dress", add=vectors(["a-000", "b-000"]), model="m")
    cut_short(store, read_manifest(store)[0]["shards"]["dress"]["key"])
    store.put("vectors/pending/dress/c-000.npy", encode_vector(np.eye(DIM)[2], "m"))
    store.put("vectors/pending/shoes/s-000.npy", encode_vector(np.eye(DIM)[3], "m"))
    replaced = []
    report = compact(store, "m", on_shard_replaced=replaced.append)
    assert report["shoes"]["total"] == 1 and report["dress"]["total"] == 1 and replaced == ["dress"]
    assert live_shard(store, "dress").ids == ["c-000"] and vector_keys(store) == {}


def test_repair_rebuilds_a_cut_manifest_and_replaces_a_cut_shard(store):
    publish(store, "dress", add=vectors(["a-000"]), model="m")
    shoes = publish(store, "shoes", add=vectors(["s-000"]), model="m")
    cut_short(store, MANIFEST_KEY)
    with pytest.raises(index.CorruptManifest, match="rebuilds it"):
        read_manifest(store)
    replaced = []
    assert index.repair(store, on_shard_replaced=replaced.append) == ["manifest rebuilt from 2 shard(s)"]
    assert live_shard(store, "shoes").ids == ["s-000"] and live_shard(store, "dress").ids == ["a-000"] and replaced == []
    assert read_manifest(store)[0]["shards"]["shoes"] == shoes
    cut_short(store, shoes["key"])
    assert index.repair(store, on_shard_replaced=replaced.append) == ["shoes shard replaced"]
    assert replaced == ["shoes"] and live_shard(store, "shoes").ids == [] and read_manifest(store)[0]["shards"]["shoes"]["model"] == "m"
    assert index.repair(store, on_shard_replaced=replaced.append) == [] and replaced == ["shoes"]


@pytest.mark.parametrize("versions", [1, 2])
def test_repair_of_a_cut_manifest_embeds_again_a_category_whose_newest_shard_is_cut_too(store, versions):
    for number in range(versions):
        newest = publish(store, "dress", add=vectors([f"d{number}-000"]), model="m")
    cut_short(store, MANIFEST_KEY)
    cut_short(store, newest["key"])
    replaced = []
    assert index.repair(store, on_shard_replaced=replaced.append) == ["manifest rebuilt from %d shard(s), dress to embed again" % (versions - 1)]
    assert replaced == ["dress"]  # the items of the cut version are in no readable one
    assert (live_shard(store, "dress") or Shard("dress", [], np.zeros((0, DIM), np.uint8))).ids == ["d0-000"][: versions - 1]


def test_a_version_written_but_never_swapped_in_is_collected_after_the_grace(store, monkeypatch):
    live = publish(store, "top", add=vectors(["d1"]))
    orphan = f"index/top/{time.time_ns():020d}-deadbeef.h5"  # a run stopped before its manifest swap
    store.put(orphan, encode_shard(Shard("top", [], np.zeros((0, DIM), np.uint8))))
    collect_old_versions(store, "top", keep=live["key"], grace_s=3600)
    assert orphan in shard_keys(store, "top")  # within the grace it may be a run's in progress
    collect_old_versions(store, "top", keep=live["key"], grace_s=0)
    assert shard_keys(store, "top") == [live["key"]]


def test_an_item_refiled_out_and_back_before_the_run_stays_in_its_shard(store):
    """Moved to another category and back again: its marker and its new vector both wait; the
    item must stay searchable in its category, not be dropped by the stale marker."""
    publish(store, "top", add=vectors(["a-000", "b-000"]), model="m")
    store.put("vectors/removed/top/a-000", b"")
    store.put("vectors/pending/top/a-000.npy", encode_vector(np.eye(DIM)[0], "m"))
    assert compact(store, "m")["top"] == {"added": ["a-000"], "removed": [], "total": 2}
    assert "a-000" in live_shard(store, "top").ids
    assert not list(store.list("vectors/removed/")) and not list(store.list("vectors/pending/"))


def test_a_category_too_large_for_the_function_does_not_hold_back_the_others(store, monkeypatch):
    """A run killed for memory on a large category (here: made to fail there) merged no category
    after it in name order, every run; the smaller ones now go first, and the run still fails."""
    publish(store, "dresses", add=vectors([f"d{i}" for i in range(20)]), model="m")
    for name, category in (("a-000", "dresses"), ("b-000", "tops"), ("c-000", "shoes")):
        store.put(f"vectors/pending/{category}/{name}.npy", encode_vector(np.ones(DIM), "m"))
    publish_ = index.publish

    def killed_on_dresses(store_, category, **kwargs):
        if category == "dresses":
            raise MemoryError("Runtime exited with error: signal: killed")
        return publish_(store_, category, **kwargs)

    monkeypatch.setattr(index, "publish", killed_on_dresses)
    with pytest.raises(MemoryError):
        compact(store, "m")
    assert live_shard(store, "tops").ids == ["b-000"] and live_shard(store, "shoes").ids == ["c-000"]
    assert [info.key for info in store.list("vectors/pending/")] == ["vectors/pending/dresses/a-000.npy"]

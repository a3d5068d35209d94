"""Several processes write one store at once: overlapping ingests (some interrupted and
resumed), tags on shared and private names, and gc in lock-step with them (barriers, not
timing, decide the interleaving). Afterwards nothing is lost (every tag present,
index.json complete), nothing is corrupt (fsck clean), and gc never ran while a writer
held a lease over committed but untagged blobs."""

from __future__ import annotations

import json
import multiprocessing
import random
import traceback
from multiprocessing.synchronize import Barrier
from pathlib import Path

from ociimg import spec
from ociimg.digest import Digest
from ociimg.errors import LockTimeout
from ociimg.spec import Descriptor
from ociimg.store import Store

WORKERS = 4
ROUNDS = 6
SHARED_LAYERS = 5
CHUNK = 64 << 10


def shared_layer(i: int) -> bytes:
    return random.Random(i).randbytes(256 * 1024 + i * 4099)


def ingest_in_chunks(store: Store, data: bytes, rng: random.Random) -> None:
    digest = Digest.of(data)
    for _attempt in range(10):
        try:
            with store.ingest(digest, len(data)) as ing:
                if ing.done:
                    return
                offset = ing.offset
                stop = len(data) if rng.random() < 0.6 else rng.randrange(len(data))
                while offset < stop:
                    ing.write(data[offset:min(offset + CHUNK, stop)])
                    offset = min(offset + CHUNK, stop)
                if stop < len(data):
                    raise ConnectionError("simulated broken download")
                ing.commit()
                return
        except ConnectionError:
            continue  # the partial stays; the next attempt resumes it
    raise AssertionError("ingest never completed")


def write_image(store: Store, wid: int, rnd: int, rng: random.Random) -> Descriptor:
    layers = [shared_layer(i) for i in rng.sample(range(SHARED_LAYERS), 2)]
    own = f"worker {wid} round {rnd}".encode() * 1000
    layers.append(own)
    for data in layers:
        ingest_in_chunks(store, data, rng)
    config = spec.canonical_json({
        "architecture": "amd64", "os": "linux", "config": {"Env": [f"W={wid}:{rnd}"]},
        "rootfs": {"type": "layers", "diff_ids": [str(Digest.of(d)) for d in layers]}})
    manifest = spec.canonical_json({
        "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
        "config": {"mediaType": spec.OCI_CONFIG, "digest": str(Digest.of(config)),
                   "size": len(config)},
        "layers": [{"mediaType": spec.OCI_LAYER, "digest": str(Digest.of(d)), "size": len(d)}
                   for d in layers]})
    store.put_blob(config)
    return Descriptor(spec.OCI_MANIFEST, store.put_blob(manifest), len(manifest))


def worker(store_path: str, wid: int, barrier: Barrier) -> None:
    try:
        store = Store(store_path)
        rng = random.Random(1000 + wid)
        for rnd in range(ROUNDS):
            with store.lease():  # as pull does: blobs are unreferenced until the tag
                desc = write_image(store, wid, rnd, rng)
                barrier.wait()  # A: everyone's blobs committed, nothing tagged yet
                barrier.wait()  # B: the collector has tried to gc
                store.tag(f"example.com/w{wid}:r{rnd}", desc)
                store.tag("example.com/shared:latest", desc)
            barrier.wait()  # C: all tagged, all leases released
            barrier.wait()  # D: the collector has collected
    except BaseException:
        traceback.print_exc()
        barrier.abort()
        raise SystemExit(1) from None


def collector(store_path: str, barrier: Barrier) -> None:
    """Each round: gc must be refused while writers hold leases over untagged blobs, and
    once they have tagged, gc must remove exactly this round's garbage."""
    try:
        store = Store(store_path)
        for rnd in range(ROUNDS):
            garbage = store.put_blob(f"garbage of round {rnd}".encode())
            barrier.wait()  # A
            try:
                store.gc()
            except LockTimeout:
                pass
            else:
                raise AssertionError("gc ran while writers held leases")
            barrier.wait()  # B
            barrier.wait()  # C
            result = store.gc(wait=True)
            assert result.removed_blobs == 1, result
            assert not store.has_blob(garbage)
            barrier.wait()  # D
    except BaseException:
        traceback.print_exc()
        barrier.abort()
        raise SystemExit(1) from None


def test_concurrent_writers_and_gc(tmp_path: Path) -> None:
    store = Store.open(tmp_path)
    ctx = multiprocessing.get_context("fork")
    barrier = ctx.Barrier(WORKERS + 1, timeout=120)
    procs = [ctx.Process(target=worker, args=(str(store.path), w, barrier))
             for w in range(WORKERS)]
    procs.append(ctx.Process(target=collector, args=(str(store.path), barrier)))
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=600)
    assert [p.exitcode for p in procs] == [0] * (WORKERS + 1)

    names = {n for n, _ in store.refs()}
    expected = {f"example.com/w{w}:r{r}" for w in range(WORKERS) for r in range(ROUNDS)}
    assert names == expected | {"example.com/shared:latest"}
    # No lost update of index.json: exactly one entry per name.
    assert len(json.loads(store.index_path.read_bytes())["manifests"]) == len(expected) + 1
    assert store.fsck() == []
    for name in expected:
        _, manifest, config = store.image_for(name)
        assert len(manifest.layers) == 3 and config.env[0].startswith("W=")
    # Everything on disk is reachable and no partial download is left behind.
    assert store.gc().removed_blobs == 0
    assert list(store.ingest_dir.iterdir()) == []

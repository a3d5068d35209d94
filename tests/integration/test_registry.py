"""The registry client against Debian's docker-registry on loopback, with skopeo as the
independent reference client. Real servers, real bytes, no mocks."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from ociimg import spec
from ociimg.errors import Unauthorized
from ociimg.reference import LayoutReference, parse_reference
from ociimg.registry import (
    CopyOptions,
    PullOptions,
    PushOptions,
    copy,
    login,
    logout,
    pull,
    push,
)
from ociimg.store import Store
from tests.conftest import need
from tests.waiting import wait_for_line

FIXTURE_TAGS = ["busybox", "busybox-zstd", "busybox-plain", "multilayer", "multiarch",
                "docker-v2"]
REPO_ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A Progress that keeps what it was told."""

    def __init__(self) -> None:
        self.logs: list[str] = []
        self.advanced: dict[str, int] = {}
        self.finished: dict[str, str | None] = {}

    def start(self, key: str, description: str, total: int | None) -> None:
        pass

    def advance(self, key: str, amount: int) -> None:
        self.advanced[key] = self.advanced.get(key, 0) + amount

    def done(self, key: str, message: str | None = None) -> None:
        self.finished[key] = message

    def log(self, message: str) -> None:
        self.logs.append(message)


def layout_digests(layout: Path) -> dict[str, str]:
    return {name: str(d.digest) for name, d in Store(layout).refs()}


def skopeo(*args: str) -> subprocess.CompletedProcess[str]:
    need(shutil.which("skopeo") is not None, "skopeo missing: apt-get install skopeo")
    result = subprocess.run(["skopeo", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result


@pytest.fixture(scope="module")
def pushed_by_us(registry, fixture_layout) -> dict[str, str]:
    """Every fixture image pushed by our push: tag → reference string."""
    src = Store(fixture_layout)
    refs = {}
    for tag in FIXTURE_TAGS:
        ref = parse_reference(f"{registry.host}/ours/{tag}:v1")
        digest = push(src, tag, ref, PushOptions())
        assert str(digest) == layout_digests(fixture_layout)[tag]
        refs[tag] = str(ref)
    return refs


@pytest.mark.parametrize("tag", FIXTURE_TAGS)
def test_our_push_then_pull_keeps_digests(pushed_by_us, fixture_layout, tmp_path, tag):
    store = Store(tmp_path / "store")
    result = pull(parse_reference(pushed_by_us[tag]), store, PullOptions(all_platforms=True))
    assert str(result.descriptor.digest) == layout_digests(fixture_layout)[tag]
    assert store.resolve(pushed_by_us[tag]).digest == result.descriptor.digest
    for desc, manifest in result.images:
        for blob in (desc, manifest.config, *manifest.layers):
            assert store.has_blob(blob.digest)
            assert store.blob_path(blob.digest).read_bytes() == \
                Store(fixture_layout).blob_path(blob.digest).read_bytes()
    assert store.fsck() == []


def test_pull_what_skopeo_pushed(pushed_fixtures, fixture_layout, tmp_path):
    store = Store(tmp_path / "store")
    expected = layout_digests(fixture_layout)
    for tag, ref in pushed_fixtures.items():
        result = pull(parse_reference(ref), store, PullOptions())
        assert str(result.descriptor.digest) == expected[tag], tag
    names = {name for name, _ in store.refs()}
    assert names == {str(parse_reference(r)) for r in pushed_fixtures.values()}
    assert store.fsck() == []


def test_multiarch_pull_selects_platform_and_keeps_index(pushed_fixtures, fixture_layout,
                                                         tmp_path):
    store = Store(tmp_path / "store")
    ref = parse_reference(pushed_fixtures["multiarch"])
    result = pull(ref, store, PullOptions(platform=spec.Platform.parse("linux/arm64")))
    assert result.descriptor.media_type in spec.INDEX_TYPES
    assert str(result.descriptor.digest) == layout_digests(fixture_layout)["multiarch"]
    ((child, _manifest),) = result.images
    assert child.platform.architecture == "arm64"


def test_skopeo_reads_what_we_push(pushed_by_us, fixture_layout, tmp_path):
    ref = pushed_by_us["busybox"]
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{ref}").stdout)
    assert inspected["Digest"] == layout_digests(fixture_layout)["busybox"]
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({"default": [{"type": "insecureAcceptAnything"}]}))
    skopeo("--policy", str(policy), "copy", "--quiet", "--src-tls-verify=false",
           f"docker://{pushed_by_us['multilayer']}", f"oci:{tmp_path / 'out'}:got")
    got = Store(tmp_path / "out").resolve("got")
    assert str(got.digest) == layout_digests(fixture_layout)["multilayer"]


def test_copy_registry_to_registry_and_layouts(pushed_by_us, registry, fixture_layout,
                                               tmp_path):
    digests = layout_digests(fixture_layout)
    src = parse_reference(pushed_by_us["multiarch"])
    dst = parse_reference(f"{registry.host}/copied/multiarch:all")
    assert str(copy(src, dst, CopyOptions(all_platforms=True))) == digests["multiarch"]
    archive = LayoutReference("oci-archive", tmp_path / "img.tar", "mine")
    copy(dst, archive, CopyOptions(all_platforms=True))
    layout = LayoutReference("oci", tmp_path / "layout", "again")
    copy(archive, layout, CopyOptions(all_platforms=True))
    assert str(Store(layout.path).resolve("again").digest) == digests["multiarch"]
    back = parse_reference(f"{registry.host}/copied/from-layout:v1")
    assert str(copy(layout, back, CopyOptions(all_platforms=True))) == digests["multiarch"]
    assert Store(layout.path).fsck() == []


def test_auth_registry_login_then_push_and_pull(auth_registry, fixture_layout, tmp_path):
    host = auth_registry.host
    auth_file = tmp_path / "auth.json"
    ref = parse_reference(f"{host}/private/busybox:v1")
    with pytest.raises(Unauthorized, match="authentication required"):
        push(Store(fixture_layout), "busybox", ref, PushOptions(auth_file=auth_file))
    with pytest.raises(Unauthorized, match=f"wrong username or password for {host}"):
        login(host, auth_registry.username, "not-the-password", auth_file)
    assert not auth_file.exists()
    login(host, auth_registry.username, auth_registry.password, auth_file)
    push(Store(fixture_layout), "busybox", ref, PushOptions(auth_file=auth_file))
    store = Store(tmp_path / "store")
    result = pull(ref, store, PullOptions(auth_file=auth_file))
    assert str(result.descriptor.digest) == layout_digests(fixture_layout)["busybox"]
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"auths": {host: {"username": auth_registry.username,
                                                "password": "stale"}}}))
    with pytest.raises(Unauthorized, match="wrong username or password"):
        pull(ref, Store(tmp_path / "other"), PullOptions(auth_file=bad))
    assert logout(host, auth_file) is True
    with pytest.raises(Unauthorized):
        pull(ref, Store(tmp_path / "third"), PullOptions(auth_file=auth_file))


STALLED_PULL = """
import signal, sys
from ociimg.reference import parse_reference
from ociimg.registry import PullOptions, pull
from ociimg.store import Store

class StallMidway:
    # Once 2 MiB are written (advance comes after the write), say so and stop there:
    # the test kills this process mid-download.
    received = 0
    def start(self, key, description, total): pass
    def advance(self, key, amount):
        self.received += amount
        if self.received >= 2 << 20:
            print("midway", flush=True)
            signal.pause()
    def done(self, key, message=None): pass
    def log(self, message): print(message, flush=True)

pull(parse_reference(sys.argv[1]), Store(sys.argv[2]), PullOptions(), StallMidway())
print("finished", flush=True)
"""


def big_image(tmp_path: Path, size: int) -> tuple[Store, spec.Descriptor]:
    """An image with one incompressible layer of ``size`` bytes."""
    store = Store(tmp_path / "big-layout")
    store.init()
    layer = os.urandom(size)
    layer_digest = store.put_blob(layer)
    config = json.dumps({"architecture": "amd64", "os": "linux",
                         "rootfs": {"type": "layers", "diff_ids": [str(layer_digest)]}}).encode()
    config_digest = store.put_blob(config)
    manifest = spec.canonical_json({
        "schemaVersion": 2, "mediaType": spec.OCI_MANIFEST,
        "config": {"mediaType": spec.OCI_CONFIG, "digest": str(config_digest),
                   "size": len(config)},
        "layers": [{"mediaType": spec.OCI_LAYER, "digest": str(layer_digest), "size": size}]})
    desc = spec.Descriptor(spec.OCI_MANIFEST, store.put_blob(manifest), len(manifest))
    store.tag("big", desc)
    return store, spec.parse_manifest(manifest).layers[0]


def partial_size(store_path: Path) -> int:
    return sum(p.stat().st_size for p in (store_path / "ingest").glob("*/data"))


def test_killed_pull_resumes_from_partial(registry, tmp_path):
    src, layer = big_image(tmp_path, 64 << 20)
    ref = parse_reference(f"{registry.host}/big/image:v1")
    push(src, "big", ref, PushOptions())
    store_path = tmp_path / "store"
    script = tmp_path / "stalled_pull.py"
    script.write_text(STALLED_PULL)
    proc = subprocess.Popen([sys.executable, str(script), str(ref), str(store_path)],
                            cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        wait_for_line(proc, "midway", timeout=120)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    kept = partial_size(store_path)
    store = Store(store_path)
    assert kept >= (2 << 20) and not store.has_blob(layer.digest)
    assert store.refs() == []  # nothing tagged by the killed pull

    progress = Recorder()
    result = pull(ref, store, PullOptions(), progress)
    resumed = [m for m in progress.logs if m.startswith(f"resuming {layer.digest.short} at ")]
    assert resumed, progress.logs
    offset = int(resumed[0].split(" at ")[1].split()[0])
    assert 0 < offset <= kept
    assert store.blob_path(layer.digest).read_bytes() == \
        src.blob_path(layer.digest).read_bytes()
    assert store.resolve(str(ref)).digest == result.descriptor.digest
    assert store.fsck() == []
    assert partial_size(store_path) == 0


def test_chunked_push_and_cross_repo_mount(registry, tmp_path):
    src, layer = big_image(tmp_path, 5 << 20)
    first = parse_reference(f"{registry.host}/chunked/a:v1")
    progress = Recorder()
    digest = push(src, "big", first, PushOptions(chunk_size=1 << 20), progress)
    assert progress.advanced[str(layer.digest)] == layer.size
    inspected = json.loads(skopeo("inspect", "--tls-verify=false", f"docker://{first}").stdout)
    assert inspected["Digest"] == str(digest)

    second = parse_reference(f"{registry.host}/chunked/b:v1")
    progress = Recorder()
    assert push(src, "big", second, PushOptions(mount_from=("chunked/a",)), progress) == digest
    assert progress.finished[str(layer.digest)] == "mounted from chunked/a"
    store = Store(tmp_path / "store")
    pull(second, store, PullOptions())
    assert store.blob_path(layer.digest).read_bytes() == src.blob_path(layer.digest).read_bytes()

    progress = Recorder()
    push(src, "big", second, PushOptions(), progress)  # everything is there already
    assert set(progress.finished.values()) == {"already exists"}

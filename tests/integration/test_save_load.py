"""`ociimg save`/`load`/`tag` through the command line, and interop for real: what we
save, podman, skopeo and docker load; what they save, we load. docker runs as a private
dockerd of this test (its own data root, socket and containerd namespace; vfs storage,
so it mounts nothing), stopped and removed at the end."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tarfile
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg.store import Store
from tests.conftest import need
from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.treewalk import diff_manifests, make_canary, tree_manifest
from tests.waiting import wait_until

NAME = "docker.io/library/busybox:latest"


@pytest.fixture
def root(fixture_layout: Path, tmp_path: Path) -> Path:
    """An ociimg root holding busybox (gzip layer) and the two-image multilayer fixture."""
    root = tmp_path / "root"
    ociimg(root, "copy", f"oci:{fixture_layout}:busybox", f"oci:{root}/store:{NAME}")
    ociimg(root, "copy", f"oci:{fixture_layout}:busybox-zstd",
           f"oci:{root}/store:example.com/zstd/busybox:1")
    return root


def diff_ids(root: Path, name: str) -> list[str]:
    return json.loads(ociimg(root, "inspect", "--json", name).stdout)["config"]["rootfs"][
        "diff_ids"]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_load_round_trip_file_and_pipe(root: Path, tmp_path: Path, fmt: str) -> None:
    archive = tmp_path / "out.tar"
    ociimg(root, "save", "--format", fmt, "-o", str(archive), NAME,
           "example.com/zstd/busybox:1")
    other = tmp_path / "other"
    out = ociimg(other, "load", "-i", str(archive)).stdout
    assert out.splitlines() == [f"Loaded image: {NAME}",
                                "Loaded image: example.com/zstd/busybox:1"]
    assert diff_ids(other, NAME) == diff_ids(root, NAME)
    # stdout → stdin
    piped = tmp_path / "piped"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    save = subprocess.Popen([os.sys.executable, "-m", "ociimg", "--root", str(root), "save",  # type: ignore[attr-defined]
                             "--format", fmt, NAME], stdout=subprocess.PIPE, env=env)
    load = subprocess.run([os.sys.executable, "-m", "ociimg", "--root", str(piped), "load"],  # type: ignore[attr-defined]
                          stdin=save.stdout, capture_output=True, text=True, env=env, timeout=120)
    assert save.wait(timeout=120) == 0 and load.returncode == 0, load.stderr
    assert load.stdout == f"Loaded image: {NAME}\n"
    assert not list((piped / "store" / "ingest").glob(".load-*"))  # the spool is gone


def test_every_command_reads_every_archive(root: Path, tmp_path: Path) -> None:
    """inspect, unpack and copy take docker-archive:, oci-archive: and dir: alike."""
    docker_tar, oci_tar = tmp_path / "d.tar", tmp_path / "o.tar"
    ociimg(root, "save", "-o", str(docker_tar), NAME)
    ociimg(root, "save", "--format", "oci-archive", "-o", str(oci_tar), NAME)
    ociimg(root, "copy", f"docker-archive:{docker_tar}", f"dir:{tmp_path / 'dir'}")
    for i, image in enumerate((f"docker-archive:{docker_tar}", f"oci-archive:{oci_tar}:{NAME}",
                               f"dir:{tmp_path / 'dir'}")):
        assert diff_ids(root, image) == diff_ids(root, NAME)
        bundle = tmp_path / f"bundle{i}"
        ociimg(root, "unpack", image, str(bundle))
        assert (bundle / "rootfs" / "bin" / "busybox").is_file()


def test_tag_and_names_of_any_length(root: Path) -> None:
    long = "example.com/" + "/".join(["component"] * 20) + ":v1.2.3-a-rather-long-tag"
    ociimg(root, "tag", "busybox", long)
    lines = ociimg(root, "images").stdout.splitlines()
    assert lines[0].split() == ["REPOSITORY", "TAG", "IMAGE", "ID", "CREATED", "SIZE"]
    repo, tag = long.rsplit(":", 1)
    assert any(line.split()[:2] == [repo, tag] for line in lines)
    # uncompressed: busybox's one layer is a 2,140,160-byte tar
    assert ociimg(root, "images", "--format", "{{.Size}}", "--filter",
                  "reference=busybox").stdout == "2.14MB\n"
    assert_one_line_error(ociimg(root, "tag", "busybox", "x@sha256:" + "a" * 64, check=False),
                          "cannot hold a digest")


def test_save_keeps_an_old_file_on_error(root: Path, tmp_path: Path) -> None:
    target = tmp_path / "keep.tar"
    target.write_bytes(b"old")
    proc = ociimg(root, "save", "-o", str(target), NAME, "no/such:image", check=False)
    assert_one_line_error(proc, "no/such:image")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_hostile_layer_in_a_docker_archive_obeys_the_applier(root: Path,
                                                             tmp_path: Path) -> None:
    """A well-formed archive whose layer.tar climbs out: unpack refuses the entry (the
    layer applier's rules), nothing lands outside the bundle."""
    import io

    from ociimg import spec
    from ociimg.digest import Digest

    canary = make_canary(tmp_path / "canary")
    before = tree_manifest(canary)
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tar:
        for name, kind, link in (("escape", tarfile.SYMTYPE, "../../canary"),
                                 ("escape/owned", tarfile.REGTYPE, ""),
                                 ("../../canary/owned2", tarfile.REGTYPE, "")):
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            info.size = 4 if kind == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(b"pwnd") if kind == tarfile.REGTYPE else None)
    layer = evil.getvalue()
    config = spec.canonical_json({"architecture": "amd64", "os": "linux",
                                  "rootfs": {"type": "layers",
                                             "diff_ids": [str(Digest.of(layer))]}})
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tar:
        for name, data in ((f"{Digest.of(layer).hex}.tar", layer),
                           (f"{Digest.of(config).hex}.json", config),
                           ("manifest.json", json.dumps([{
                               "Config": f"{Digest.of(config).hex}.json",
                               "RepoTags": ["evil:1"],
                               "Layers": [f"{Digest.of(layer).hex}.tar"]}]).encode())):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    proc = ociimg(root, "unpack", f"docker-archive:{archive}", str(tmp_path / "b"),
                  check=False)
    assert_one_line_error(proc, "'..' path component")
    assert diff_manifests(before, tree_manifest(canary)) == []
    assert not (tmp_path / "owned2").exists() and not (tmp_path.parent / "owned2").exists()


def test_half_bad_archive_tags_nothing(root: Path, tmp_path: Path) -> None:
    archive = tmp_path / "two.tar"
    ociimg(root, "save", "-o", str(archive), NAME, "example.com/zstd/busybox:1")
    with tarfile.open(archive) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]
    bad = tmp_path / "bad.tar"
    with tarfile.open(bad, "w") as tar:
        for i, (member, data) in enumerate(members):
            if member.name.endswith(".tar") and i == len(members) - 2:
                data = data[:-1] + b"\x01"  # the last layer's last byte
            tar.addfile(member, __import__("io").BytesIO(data))
    other = tmp_path / "other"
    proc = ociimg(other, "load", "-i", str(bad), check=False)
    assert_one_line_error(proc)
    assert Store(other / "store").refs() == []


# Interop -----------------------------------------------------------------------------
@pytest.fixture
def podman(tmp_path: Path) -> Iterator[list[str]]:
    """podman on a private store (vfs: no mounts); its runroot must be short (podman
    refuses one over 50 characters)."""
    need(shutil.which("podman") is not None, "podman missing: apt-get install podman")
    runroot = tempfile.mkdtemp(prefix="ocp-", dir="/tmp")
    try:
        yield ["podman", "--root", str(tmp_path / "podman"), "--runroot", runroot,
               "--storage-driver", "vfs", "--cgroup-manager", "cgroupfs",
               "--events-backend", "file"]
    finally:
        shutil.rmtree(runroot, ignore_errors=True)


def run(cmd: list[str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*cmd, *args], capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_podman_loads_what_we_save_and_we_load_its(root: Path, tmp_path: Path, fmt: str,
                                                   podman: list[str]) -> None:
    archive = tmp_path / "ours.tar"
    ociimg(root, "save", "--format", fmt, "-o", str(archive), NAME)
    proc = run(podman, "load", "-i", str(archive))
    assert proc.returncode == 0 and f"Loaded image: {NAME}" in proc.stdout, proc.stderr
    theirs = tmp_path / "theirs.tar"
    proc = run(podman, "save", "--format", fmt, "-o", str(theirs), NAME)
    assert proc.returncode == 0, proc.stderr
    other = tmp_path / "other"
    assert NAME in ociimg(other, "load", "-i", str(theirs)).stdout
    assert diff_ids(other, NAME) == diff_ids(root, NAME)


def test_skopeo_reads_our_archives_and_we_read_its(root: Path, tmp_path: Path) -> None:
    need(shutil.which("skopeo") is not None, "skopeo missing: apt-get install skopeo")
    ours = tmp_path / "ours.tar"
    ociimg(root, "save", "-o", str(ours), NAME)
    subprocess.run(["skopeo", "copy", f"docker-archive:{ours}", f"oci:{tmp_path / 'sk'}:x"],
                   check=True, capture_output=True, timeout=300)
    sk_config = Store(tmp_path / "sk").image_for("x")[2]
    assert [str(d) for d in sk_config.diff_ids] == diff_ids(root, NAME)
    ours_oci = tmp_path / "ours-oci.tar"
    ociimg(root, "save", "--format", "oci-archive", "-o", str(ours_oci), NAME)
    subprocess.run(["skopeo", "copy", f"oci-archive:{ours_oci}:{NAME}",
                    f"oci:{tmp_path / 'sk'}:y"], check=True, capture_output=True, timeout=300)
    assert Store(tmp_path / "sk").image_for("y")[2].diff_ids == sk_config.diff_ids
    theirs = tmp_path / "theirs.tar"
    subprocess.run(["skopeo", "copy", f"oci:{tmp_path / 'sk'}:x",
                    f"docker-archive:{theirs}:example.com/from/skopeo:1"],
                   check=True, capture_output=True, timeout=300)
    other = tmp_path / "other"
    assert ociimg(other, "load", "-i", str(theirs)).stdout == \
        "Loaded image: example.com/from/skopeo:1\n"
    assert diff_ids(other, "example.com/from/skopeo:1") == diff_ids(root, NAME)


@pytest.fixture
def dockerd() -> Iterator[list[str]]:
    """A private dockerd (short base dir: containerd's socket path must fit in
    sun_path); yields the docker command prefix for it."""
    need(shutil.which("dockerd") is not None and shutil.which("docker") is not None,
         "docker.io missing: apt-get install docker.io")
    base = Path(tempfile.mkdtemp(prefix="ocd-", dir="/tmp"))
    sock = base / "docker.sock"
    log = open(base / "log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
         "--storage-driver=vfs", f"--data-root={base}/data", f"--exec-root={base}/exec",
         f"--pidfile={base}/pid", f"-H=unix://{sock}", "--containerd-namespace=ociimg-test",
         "--containerd-plugins-namespace=ociimg-test-p"],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    cli = ["docker", "-H", f"unix://{sock}"]
    try:
        wait_until(lambda: run(cli, "version").returncode == 0, "dockerd never answered",
                   timeout=60, proc=proc)
        yield cli
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        _umount_below(base)
        shutil.rmtree(base, ignore_errors=True)


def _umount_below(base: Path) -> None:
    """dockerd makes its data root a private bind mount and may leave it behind."""
    for line in reversed(Path("/proc/self/mountinfo").read_text().splitlines()):
        point = line.split()[4].replace("\\040", " ")
        if point == str(base) or point.startswith(f"{base}/"):
            subprocess.run(["umount", "-l", point], check=False)
    assert str(base) not in Path("/proc/self/mountinfo").read_text()


def test_docker_loads_what_we_save_and_we_load_docker_save(root: Path, tmp_path: Path,
                                                           dockerd: list[str]) -> None:
    ours = tmp_path / "ours.tar"
    ociimg(root, "save", "-o", str(ours), NAME)
    proc = run(dockerd, "load", "-i", str(ours))
    assert proc.returncode == 0 and "Loaded image: busybox:latest" in proc.stdout, proc.stderr
    # a second image on top of it, made by docker (two layers, one shared with busybox)
    ctx = tmp_path / "ctx"
    ctx.mkdir()
    (ctx / "x").write_text("hi\n")
    (ctx / "Dockerfile").write_text("FROM busybox\nCOPY x /x\n")
    subprocess.run([*dockerd, "build", "-q", "-t", "built:1", str(ctx)], check=True,
                   capture_output=True, timeout=300)
    theirs = tmp_path / "theirs.tar"
    subprocess.run([*dockerd, "save", "-o", str(theirs), "built:1", "busybox"], check=True,
                   capture_output=True, timeout=300)
    with tarfile.open(theirs) as tar:  # docker ≤ 24: the legacy layout, shared layer linked
        assert "manifest.json" in tar.getnames()
    other = tmp_path / "other"
    out = ociimg(other, "load", "-i", str(theirs)).stdout
    assert "Loaded image: docker.io/library/built:1" in out
    assert diff_ids(other, NAME) == diff_ids(root, NAME)
    layers = diff_ids(other, "built:1")
    assert layers[0] == diff_ids(root, NAME)[0] and len(layers) == 2
    bundle = tmp_path / "bundle"
    ociimg(other, "unpack", "built:1", str(bundle))
    assert (bundle / "rootfs" / "x").read_text() == "hi\n"

"""``ociimg commit`` for real: the committed image is the container's merged view (umoci
unpacks it to the same tree), runs with the change (deletions stay deleted), survives a
push to a registry and a pull onto a clean root, and is valid OCI. An image run from an
``oci:`` layout has its layers copied into the store, or is refused once the layout is
gone; bad input writes nothing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests import ocischema
from tests.conftest import need
from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.integration.test_build_e2e import stored
from tests.treewalk import diff_manifests, tree_manifest

# Every kind of change: added, changed (content, owner, mode), deleted (a whiteout), a dir
# replaced by a new one (opaque), a hardlink and a symlink pointing out of the root.
SCRIPT = """set -e
echo hello > /etc/motd
chown 1234:5678 /etc/motd
chmod 4750 /etc/motd
ln /etc/motd /etc/motd.hard
echo changed >> /etc/group
rm /etc/passwd
rm -rf /usr && mkdir -p /usr/local && echo fresh > /usr/local/only
mkdir -p /new/dir && echo x > /new/dir/f
ln -s /../../../etc/shadow /new/escape
"""
CHECK = """for f in /etc/passwd /usr/bin; do test -e $f && echo "$f is back"; done
cat /etc/motd /usr/local/only /new/dir/f; readlink /new/escape; tail -1 /etc/group"""
EXPECTED = "hello\nfresh\nx\n/../../../etc/shadow\nchanged\n"


def container_id(root: Path, name: str) -> str:
    rows = json.loads(ociimg(root, "ps", "-a", "--json").stdout)
    return next(r["id"] for r in rows if r["name"] == name)


def merged_view(root: Path, cid: str) -> dict[str, dict]:
    from ociimg.layers.snapshots import SnapshotStore
    with SnapshotStore(root / "snapshots").mounted(cid) as path:
        return tree_manifest(path)


@pytest.fixture
def busybox(pushed_fixtures: dict[str, str]) -> str:
    return pushed_fixtures["busybox"]


def make_changed_container(root: Path, image: str, name: str = "work") -> str:
    ociimg(root, "run", "--name", name, image, "sh", "-c", SCRIPT)
    cid = container_id(root, name)
    # An xattr too (busybox has no setfattr): set through the snapshot's merged view.
    from ociimg.layers.snapshots import SnapshotStore
    with SnapshotStore(root / "snapshots").mounted(cid) as path:
        os.setxattr(path / "new" / "dir" / "f", "user.origin", b"commit-test")
    return cid


def test_commit_is_the_merged_view_for_umoci_and_runs(ociroot: Path, busybox: str,
                                                      tmp_path: Path) -> None:
    need(shutil.which("umoci") is not None, "umoci missing: apt-get install umoci")
    ociimg(ociroot, "pull", busybox)
    cid = make_changed_container(ociroot, busybox)
    changes = ociimg(ociroot, "diff", "work").stdout.splitlines()
    assert {"D /etc/passwd", "A /etc/motd", "C /etc/group", "A /new/escape",
            "C /usr"} <= set(changes)
    assert changes == sorted(changes, key=lambda line: line[2:])
    out = json.loads(ociimg(ociroot, "commit", "--json", "-m", "the change", "-a", "Tester",
                            "-c", 'CMD ["sh", "-c", "cat /etc/motd"]', "-c", "ENV MODE=committed",
                            "work", "test/committed:1").stdout)
    name = "docker.io/test/committed:1"
    assert out["name"] == name and out["layer"]
    manifest, config = stored(ociroot, name)
    ocischema.validate(manifest, "image-spec", "image-manifest-schema.json")
    ocischema.validate(config, "image-spec", "config-schema.json")
    assert config["history"][-1]["comment"] == "the change"
    assert config["history"][-1]["author"] == "Tester" and config["author"] == "Tester"
    assert config["config"]["Cmd"] == ["sh", "-c", "cat /etc/motd"]
    assert "MODE=committed" in config["config"]["Env"]
    assert len(config["rootfs"]["diff_ids"]) == len(manifest["layers"]) == 2

    bundle = tmp_path / "umoci-bundle"
    subprocess.run(["umoci", "unpack", "--image", f"{ociroot / 'store'}:{name}", str(bundle)],
                   check=True, capture_output=True)
    unpacked = tree_manifest(bundle / "rootfs")
    merged = merged_view(ociroot, cid)
    for tree in (unpacked, merged):
        tree.pop(".")  # the mount point / umoci's own rootfs dir
    assert diff_manifests(merged, unpacked) == []
    assert merged["new/dir/f"]["xattrs"] == {"user.origin": b"commit-test".hex()}
    assert merged["etc/motd"]["mode"] == oct(0o4750) and merged["etc/motd"]["uid"] == 1234

    assert ociimg(ociroot, "run", "--rm", name).stdout == "hello\n"
    assert ociimg(ociroot, "run", "--rm", name, "sh", "-c", CHECK).stdout == EXPECTED


def test_commit_push_pull_run_on_a_clean_root(ociroot: Path, busybox: str, registry,
                                              tmp_path: Path) -> None:
    ociimg(ociroot, "pull", busybox)
    make_changed_container(ociroot, busybox)
    target = f"{registry.host}/committed/image:1"
    ociimg(ociroot, "commit", "work", target)
    ociimg(ociroot, "push", target)
    ociimg(ociroot, "rm", "work")
    clean = tmp_path / "clean-root"
    try:
        ociimg(clean, "pull", target)
        assert ociimg(clean, "run", "--rm", target, "sh", "-c", CHECK).stdout == EXPECTED
    finally:
        subprocess.run(["umount", "-R", "-l", str(clean)], check=False, capture_output=True)
    need(shutil.which("skopeo") is not None, "skopeo missing")
    proc = subprocess.run(["skopeo", "inspect", "--tls-verify=false", f"docker://{target}"],
                          check=True, capture_output=True, text=True)
    assert len(json.loads(proc.stdout)["Layers"]) == 2


def test_commit_of_an_unchanged_container_adds_no_layer(ociroot: Path, busybox: str) -> None:
    ociimg(ociroot, "pull", busybox)
    ociimg(ociroot, "run", "--name", "same", busybox, "true")
    assert ociimg(ociroot, "diff", "same").stdout == ""
    out = json.loads(ociimg(ociroot, "commit", "--json", "same", "same:1").stdout)
    assert out["layer"] is None
    manifest, config = stored(ociroot, "docker.io/library/same:1")
    assert len(manifest["layers"]) == 1
    assert config["history"][-1]["empty_layer"] is True


def test_bad_input_is_one_line_and_writes_nothing(ociroot: Path, busybox: str) -> None:
    ociimg(ociroot, "pull", busybox)
    ociimg(ociroot, "run", "--name", "c", busybox, "sh", "-c", "echo x > /x")
    blobs = set(os.listdir(ociroot / "store" / "blobs" / "sha256"))
    for args, needle in (
        (["-c", "ONBUILD RUN make"], "ONBUILD"),
        (["-c", "EXPOSE http"], "invalid port"),
        (["-c", 'ENV A="open'], "matching double-quote"),
        (["-c", "FROM scratch"], "unknown instruction"),
    ):
        assert_one_line_error(ociimg(ociroot, "commit", *args, "c", "x:1", check=False),
                              needle)
    assert_one_line_error(ociimg(ociroot, "commit", "c", "Bad:Name:x", check=False))
    assert_one_line_error(ociimg(ociroot, "commit", "c", "x@sha256:" + "0" * 64,
                                 check=False), "digest")
    assert_one_line_error(ociimg(ociroot, "commit", "nope", "x:1", check=False), "nope")
    assert set(os.listdir(ociroot / "store" / "blobs" / "sha256")) == blobs
    assert "x:1" not in ociimg(ociroot, "images").stdout


def test_commit_from_an_oci_layout(ociroot: Path, fixture_layout: Path, tmp_path: Path
                                   ) -> None:
    layout = tmp_path / "layout"
    shutil.copytree(fixture_layout, layout)
    ociimg(ociroot, "run", "--name", "from-layout", f"oci:{layout}:busybox", "sh", "-c",
           "echo from-layout > /marker")
    ociimg(ociroot, "run", "--name", "later", f"oci:{layout}:busybox", "true")
    # The layout's layer blobs are copied (verified) into the store: the image is whole.
    ociimg(ociroot, "commit", "from-layout", "layout/commit:1")
    assert ociimg(ociroot, "run", "--rm", "layout/commit:1", "cat", "/marker"
                  ).stdout == "from-layout\n"
    assert "store is clean" in ociimg(ociroot, "fsck").stdout
    # Once the layout is gone the base layers cannot be had: refused, nothing written.
    shutil.rmtree(layout)
    assert_one_line_error(ociimg(ociroot, "commit", "later", "layout/commit:2", check=False),
                          "not in the store", "ociimg copy")
    assert "layout/commit:2" not in ociimg(ociroot, "images").stdout


def test_source_date_epoch_makes_commits_reproducible(ociroot: Path, busybox: str,
                                                      monkeypatch) -> None:
    ociimg(ociroot, "pull", busybox)
    ociimg(ociroot, "run", "--name", "r", busybox, "sh", "-c", "echo x > /x; mkdir /d")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = json.loads(ociimg(ociroot, "commit", "--json", "r", "repro:1").stdout)
    second = json.loads(ociimg(ociroot, "commit", "--json", "r", "repro:2").stdout)
    assert first["digest"] == second["digest"]
    _, config = stored(ociroot, "docker.io/library/repro:1")
    assert config["created"] == config["history"][-1]["created"] == "2023-11-14T22:13:20Z"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert_one_line_error(ociimg(ociroot, "commit", "r", "repro:3", check=False),
                          "SOURCE_DATE_EPOCH")

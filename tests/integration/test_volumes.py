"""Named and anonymous volumes through `ociimg run` and `ociimg volume`: copy-up from the
image like docker, in-use tracking, --volumes-from, rm -v / --rm; and hostile images and
containers: symlinks in the image or written into a volume never lead the host out."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.conftest import load_build_images
from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.waiting import wait_until


@pytest.fixture
def hostile(tmp_path: Path) -> tuple[str, Path]:
    """An image with VOLUMEs /data and /vol; /data holds a file, a fifo and symlinks out;
    /vol and /rel are symlinks to a host dir holding a secret (absolute and ../ forms)."""
    b = load_build_images()
    host = tmp_path / "hostdir"
    host.mkdir()
    (host / "secret").write_text("host secret\n")
    layout = b.Layout(tmp_path / "layout")
    base = b.put_layer(layout, b.busybox_entries(), b.OCI_LAYER)
    extra = b.put_layer(layout, [
        b.dir_("data", mode=0o750, uid=1000, gid=1000),
        b.file_("data/a.txt", b"image data\n", mode=0o640, uid=1000),
        b.dir_("data/sub"), b.file_("data/sub/deep.txt", b"deep\n"),
        b.symlink("data/abs", "/etc/passwd"), b.symlink("data/up", "../../../../../etc"),
        b.fifo("data/pipe"),
        b.symlink("vol", str(host)), b.symlink("rel", "../../../../../../.." + str(host)),
    ], b.OCI_LAYER)
    config = b.make_config(b.host_arch(), [base, extra], {
        "Cmd": ["/bin/sh"], "Env": [b.PATH_ENV], "Volumes": {"/data": {}, "/vol": {}}},
        ["base", "hostile"])
    layout.tag("hostile", b.put_image(layout, config, [base, extra]))
    layout.finish()
    return f"oci:{tmp_path / 'layout'}:hostile", host


def _volumes(root: Path) -> list[dict]:
    return json.loads(ociimg(root, "volume", "ls", "--json").stdout)


def _data(root: Path, name: str) -> Path:
    return root / "volumes" / name / "_data"


def test_named_volume_copy_up_persistence_and_in_use(ociroot: Path,
                                                     hostile: tuple[str, Path]) -> None:
    image, _ = hostile
    out = ociimg(ociroot, "run", "--rm", "-v", "v1:/data", image, "sh", "-c",
                 "cat /data/a.txt /data/sub/deep.txt; stat -c '%a %u' /data /data/a.txt; "
                 "rm /data/a.txt; echo mine > /data/new").stdout
    assert out == "image data\ndeep\n750 1000\n640 1000\n"  # content, modes and owners
    data = _data(ociroot, "v1")
    assert os.readlink(data / "abs") == "/etc/passwd"  # copied as a link, never followed
    assert os.readlink(data / "up") == "../../../../../etc"
    # Not empty any more: no second copy-up, the first container's changes stay.
    out = ociimg(ociroot, "run", "--rm", "-v", "v1:/d:ro", image, "sh", "-c",
                 "ls /d; echo x > /d/y", check=False)
    assert out.stdout.split() == ["abs", "new", "pipe", "sub", "up"]
    assert out.returncode == 1 and "Read-only" in out.stderr
    [v] = [v for v in _volumes(ociroot) if v["Name"] == "v1"]
    assert v["Mountpoint"] == str(data) and not v["Anonymous"]
    # In use by a (stopped) container: refused; then removed with it gone.
    ociimg(ociroot, "run", "--name", "user", "--mount", "type=volume,src=v1,dst=/m",
           image, "true")
    assert_one_line_error(ociimg(ociroot, "volume", "rm", "v1", check=False), "in use")
    assert ociimg(ociroot, "volume", "prune", "--all").stdout.strip() == ""
    ociimg(ociroot, "rm", "user")  # without -v: its anonymous /data and /vol stay
    ociimg(ociroot, "volume", "create", "--label", "k=v", "v2")
    unnamed = ociimg(ociroot, "volume", "create").stdout.strip()
    anonymous = sorted(v["Name"] for v in _volumes(ociroot) if v["Anonymous"])
    assert len(anonymous) == 2
    assert sorted(ociimg(ociroot, "volume", "prune").stdout.split()) == anonymous  # named stay
    assert json.loads(ociimg(ociroot, "volume", "inspect", "v2").stdout)[0]["Labels"] == \
        {"k": "v"}
    ociimg(ociroot, "volume", "rm", "v1")
    assert not (ociroot / "volumes" / "v1").exists()
    assert sorted(ociimg(ociroot, "volume", "prune", "-a").stdout.split()) == \
        sorted(["v2", unnamed])
    assert _volumes(ociroot) == []


def test_image_volumes_never_cover_the_root(tmp_path: Path) -> None:
    from ociimg.containers.volumes import VolumeStore, plan_mounts
    rootfs = tmp_path / "rootfs"
    (rootfs / "data").mkdir(parents=True)
    (rootfs / "data" / "f").write_text("image\n")
    store = VolumeStore(tmp_path / "root")
    with store.locked():
        plan = plan_mounts(store, rootfs, explicit=[], binds=[], inherited=[],
                           image_volumes=["/", "//", "/..", "/data", "/data/", "/./data"])
    assert [b.destination for b in plan.binds] == ["/data"]
    assert (Path(plan.binds[0].source) / "f").read_text() == "image\n"


def test_anonymous_volumes_for_image_volumes(ociroot: Path, hostile: tuple[str, Path]) -> None:
    image, _ = hostile
    ociimg(ociroot, "run", "--rm", image, "sh", "-c", "cat /data/a.txt")
    assert _volumes(ociroot) == []  # --rm removes its anonymous volumes
    ociimg(ociroot, "run", "-d", "--rm", image, "true")  # detached: its monitor does
    wait_until(lambda: _volumes(ociroot) == [] and not json.loads(
        ociimg(ociroot, "ps", "-a", "--json").stdout), "the detached --rm container to go")
    ociimg(ociroot, "run", "--name", "keep", "-v", "/extra", image, "true")
    assert len(_volumes(ociroot)) == 3 and all(v["Anonymous"] for v in _volumes(ociroot))
    # --volumes-from sees the same data; rm -v of the first leaves what the second uses
    out = ociimg(ociroot, "run", "--name", "second", "--volumes-from", "keep:ro", image,
                 "sh", "-c", "cat /data/a.txt; grep ' /data ' /proc/mounts").stdout
    assert out.startswith("image data\n") and " ro," in out
    ociimg(ociroot, "rm", "-v", "keep")
    assert len(_volumes(ociroot)) == 3
    ociimg(ociroot, "rm", "-v", "second")
    assert _volumes(ociroot) == []


def test_copy_up_never_follows_image_symlinks_out(ociroot: Path,
                                                  hostile: tuple[str, Path]) -> None:
    image, host = hostile
    for dest in ("/vol", "/rel"):
        name = f"h{dest[1:]}"
        out = ociimg(ociroot, "run", "--rm", "-v", f"{name}:{dest}", image, "sh", "-c",
                     f"ls -A {dest}; echo inside > {dest}/written").stdout
        assert out == ""  # the link resolved inside the rootfs: nothing there, no secret
        assert "secret" not in os.listdir(_data(ociroot, name))
    # /rel leads where /vol does (inside the rootfs), where the image's anonymous /vol
    # volume is mounted last: the write of the /rel run went there.
    assert os.listdir(_data(ociroot, "hvol")) == ["written"]
    assert sorted(os.listdir(host)) == ["secret"]
    assert (host / "secret").read_text() == "host secret\n"


def test_links_written_into_a_volume_stay_inside(ociroot: Path, hostile: tuple[str, Path],
                                                 tmp_path: Path) -> None:
    image, host = hostile
    ociimg(ociroot, "volume", "create", "shared")
    ociimg(ociroot, "run", "--rm", "-v", "shared:/s", image, "sh", "-c",
           f"ln -s {host} /s/hostdir; ln -s / /s/root; mkdir /s/d; ln -s {host}/secret /s/d/f")
    # A later container follows them in its own root; copy-up does not run (not empty).
    out = ociimg(ociroot, "run", "--rm", "-v", "shared:/data", image, "sh", "-c",
                 "ls /data/hostdir 2>&1; cat /data/d/f 2>&1; ls /data/a.txt 2>&1",
                 check=False).stdout
    assert "host secret" not in out and "No such file" in out
    ociimg(ociroot, "volume", "rm", "shared")  # removal never follows a link
    assert (host / "secret").read_text() == "host secret\n"
    assert os.path.isdir("/etc") and os.listdir("/etc")


@pytest.mark.parametrize("name", ["../escape", "..", "a/b", "/abs", ".x"])
def test_volume_names_cannot_traverse(ociroot: Path, name: str, tmp_path: Path) -> None:
    for args in (["volume", "create", name], ["volume", "rm", name],
                 ["volume", "inspect", name]):
        proc = ociimg(ociroot, *args, check=False)
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert not (ociroot / "escape").exists() and not (tmp_path / "escape").exists()
    assert not (ociroot / "volumes").exists() or os.listdir(ociroot / "volumes") in ([],
                                                                                    [".lock"])


def test_an_image_cannot_make_thousands_of_volumes(tmp_path: Path) -> None:
    from ociimg.containers.volumes import VolumeStore, plan_mounts
    from ociimg.errors import InvalidDocument
    store = VolumeStore(tmp_path / "root")
    with store.locked(), pytest.raises(InvalidDocument, match="VOLUMEs"):
        plan_mounts(store, tmp_path, explicit=[], binds=[], inherited=[],
                    image_volumes=[f"/v{i}" for i in range(10_000)])
    assert store.list() == []


def test_concurrent_first_uses_make_one_volume(ociroot: Path, hostile: tuple[str, Path]) -> None:
    from tests.integration.cli_helpers import ociimg_background
    image, _ = hostile
    procs = [ociimg_background(ociroot, "run", "--rm", "-v", "race:/data", image, "sh", "-c",
                               f"echo {i} >> /data/log") for i in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert [v["Name"] for v in _volumes(ociroot)] == ["race"]
    data = _data(ociroot, "race")
    assert sorted((data / "log").read_text().split()) == ["0", "1", "2", "3"]
    assert (data / "a.txt").read_text() == "image data\n"  # copied up once, by the first

"""``ociimg cp``'s copy core on a container root: docker cp's path rules, and attacks by
symlinks in the container that point out (absolute, ``..``, a dir link, a race that
swaps a dir for a link). The host's files beside the root must be neither read nor
written: their content never shows up in a copy, and they stay byte-for-byte the same."""

from __future__ import annotations

import io
import os
import stat
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg.commands.copying import (
    CopyError,
    CopyOptions,
    copy_into_root,
    copy_out_of_root,
)
from ociimg.errors import NotFound, OciimgError

MARKER = b"HOST-SECRET-do-not-copy"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Path, int, Path]]:
    """(container root, its O_PATH fd, a host dir with a secret beside the root)."""
    root = tmp_path / "ctr"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "hostname").write_text("ctr\n")
    (root / "data" / "sub").mkdir(parents=True)
    (root / "data" / "a.txt").write_text("a\n")
    (root / "data" / "sub" / "b.txt").write_text("b\n")
    host = tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(MARKER)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        yield root, fd, host
    finally:
        os.close(fd)


def tree(path: Path) -> dict[str, object]:
    """Relative path → content / link text / 'dir' (no following)."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(path):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(path))
            if p.is_symlink():
                out[rel] = "-> " + os.readlink(p)
            elif p.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = p.read_bytes()
    return out


def assert_host_untouched(host: Path, *copies: Path) -> None:
    assert tree(host) == {"secret": MARKER}
    for c in copies:
        for value in tree(c).values():
            assert value != MARKER


# docker cp's rules ------------------------------------------------------------------
def test_file_out_to_new_name_and_into_existing_dir(world, tmp_path: Path) -> None:
    _, fd, _ = world
    out = tmp_path / "out"
    out.mkdir()
    copy_out_of_root(fd, "c", "/etc/hostname", str(out / "renamed"), CopyOptions())
    copy_out_of_root(fd, "c", "etc/hostname", str(out), CopyOptions())
    assert (out / "renamed").read_text() == "ctr\n" and (out / "hostname").read_text() == "ctr\n"


def test_dir_out_new_existing_and_contents(world, tmp_path: Path) -> None:
    _, fd, _ = world
    copy_out_of_root(fd, "c", "/data", str(tmp_path / "new"), CopyOptions())
    assert tree(tmp_path / "new") == {"a.txt": b"a\n", "sub": "dir", "sub/b.txt": b"b\n"}
    (tmp_path / "exists").mkdir()
    copy_out_of_root(fd, "c", "/data", str(tmp_path / "exists"), CopyOptions())
    assert tree(tmp_path / "exists")["data/sub/b.txt"] == b"b\n"
    (tmp_path / "contents").mkdir()
    copy_out_of_root(fd, "c", "/data/.", str(tmp_path / "contents"), CopyOptions())
    assert tree(tmp_path / "contents") == tree(tmp_path / "new")


@pytest.mark.parametrize("src, dest, message", [
    ("/etc/hostname/", "out", "not a directory"),
    ("/etc/hostname", "missing-dir/", "does not exist"),
    ("/data", "file", "not a directory"),
    ("/nope", "out", "no such file"),
    ("/etc/hostname", "no/such/parent/x", "no such directory"),
])
def test_bad_out_paths_are_one_line_errors(world, tmp_path: Path, src: str, dest: str,
                                           message: str) -> None:
    _, fd, _ = world
    (tmp_path / "file").write_text("keep")
    with pytest.raises(OciimgError, match=message):
        copy_out_of_root(fd, "c", src, f"{tmp_path}/{dest}", CopyOptions())
    assert (tmp_path / "file").read_text() == "keep"


def test_into_container_rules(world, tmp_path: Path) -> None:
    root, fd, _ = world
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "f").write_text("f\n")
    (src / "one").write_text("1\n")
    copy_into_root(fd, "c", str(src / "one"), "/etc/", CopyOptions())
    copy_into_root(fd, "c", str(src / "one"), "/etc/renamed", CopyOptions())
    copy_into_root(fd, "c", str(src / "d"), "/data", CopyOptions())
    copy_into_root(fd, "c", str(src / "d"), "/newdir", CopyOptions())
    assert (root / "etc" / "one").read_text() == "1\n"
    assert (root / "etc" / "renamed").read_text() == "1\n"
    assert (root / "data" / "d" / "f").read_text() == "f\n"
    assert (root / "newdir" / "f").read_text() == "f\n"
    if os.geteuid() == 0:
        assert (root / "newdir" / "f").stat().st_uid == 0
    with pytest.raises(CopyError, match="no such directory"):
        copy_into_root(fd, "c", str(src / "one"), "/missing/", CopyOptions())
    with pytest.raises(CopyError, match="not a directory"):
        copy_into_root(fd, "c", str(src / "d"), "/etc/hostname", CopyOptions())
    (root / "data" / "d" / "one").mkdir()
    with pytest.raises(CopyError, match="overwrite directory"):
        copy_into_root(fd, "c", str(src / "one"), "/data/d", CopyOptions())


# Attacks ------------------------------------------------------------------------------
def test_absolute_and_dotdot_symlinks_are_resolved_inside_the_root(world, tmp_path: Path
                                                                    ) -> None:
    root, fd, host = world
    escape = "/../../../../../../../.." + str(host / "secret")
    (root / "etc" / "x").symlink_to(escape)
    out = tmp_path / "out"
    out.mkdir()
    # Without -L the link itself is copied; its text is data, not followed.
    copy_out_of_root(fd, "c", "/etc/x", str(out / "x"), CopyOptions())
    assert os.readlink(out / "x") == escape
    # With -L it is resolved inside the root: there is no such file in the container.
    with pytest.raises(NotFound):
        copy_out_of_root(fd, "c", "/etc/x", str(out / "y"), CopyOptions(follow=True))
    # ... and a decoy at that path inside the root is what -L reads.
    decoy = root / str(host / "secret").lstrip("/")
    decoy.parent.mkdir(parents=True)
    decoy.write_text("decoy")
    copy_out_of_root(fd, "c", "/etc/x", str(out / "z"), CopyOptions(follow=True))
    assert (out / "z").read_text() == "decoy"
    # Copying in through the link replaces the link; the host file is not written.
    src = tmp_path / "payload"
    src.write_text("pwned")
    copy_into_root(fd, "c", str(src), "/etc/x", CopyOptions())
    assert (root / "etc" / "x").read_text() == "pwned" and not (root / "etc" / "x").is_symlink()
    assert_host_untouched(host, out)


def test_a_dir_symlink_pointing_out(world, tmp_path: Path) -> None:
    root, fd, host = world
    (root / "d").symlink_to("../../../../../../.." + str(host))
    payload = tmp_path / "payload"
    payload.write_text("pwned")
    with pytest.raises(OciimgError):
        copy_into_root(fd, "c", str(payload), "/d/", CopyOptions())
    with pytest.raises(OciimgError):
        copy_into_root(fd, "c", str(payload), "/d/secret", CopyOptions())
    out = tmp_path / "out"
    out.mkdir()
    with pytest.raises(NotFound):
        copy_out_of_root(fd, "c", "/d/secret", str(out / "s"), CopyOptions())
    with pytest.raises(NotFound):
        copy_out_of_root(fd, "c", "/d/.", str(out), CopyOptions())
    assert_host_untouched(host, out)


def test_links_inside_a_copied_tree_are_not_followed(world, tmp_path: Path) -> None:
    root, fd, host = world
    (root / "data" / "l").symlink_to(str(host / "secret"))
    (root / "data" / "up").symlink_to("../../../..")
    out = tmp_path / "out"
    copy_out_of_root(fd, "c", "/data", str(out), CopyOptions())
    assert os.readlink(out / "l") == str(host / "secret")
    assert os.readlink(out / "up") == "../../../.."
    # Into the container: a link in the way of a dir is an error, never followed.
    (root / "data" / "sub2").symlink_to(str(host))
    src = tmp_path / "src"
    (src / "sub2").mkdir(parents=True)
    (src / "sub2" / "secret").write_text("pwned")
    with pytest.raises(CopyError, match="non-directory"):
        copy_into_root(fd, "c", str(src) + "/.", "/data", CopyOptions())
    # A file over a link in the container replaces the link, not its target.
    (src / "sub2" / "secret").unlink()
    (src / "sub2").rmdir()
    (src / "l").write_text("pwned")
    copy_into_root(fd, "c", str(src) + "/.", "/data", CopyOptions())
    assert (root / "data" / "l").read_text() == "pwned"
    assert_host_untouched(host, out)


def test_tar_out_and_in_stay_inside(world, tmp_path: Path) -> None:
    root, fd, host = world
    (root / "data" / "l").symlink_to(str(host / "secret"))
    buf = io.BytesIO()
    copy_out_of_root(fd, "c", "/data", buf, CopyOptions())
    names = tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()
    assert sorted(names) == ["data", "data/a.txt", "data/l", "data/sub", "data/sub/b.txt"]
    assert MARKER not in buf.getvalue()
    evil = io.BytesIO()
    with tarfile.open(fileobj=evil, mode="w") as tf:
        for name, kind in (("../../escape", tarfile.REGTYPE), ("ln", tarfile.SYMTYPE)):
            info = tarfile.TarInfo(name)
            info.type = kind
            info.linkname = str(host) if kind == tarfile.SYMTYPE else ""
            data = b"pwned"
            info.size = len(data) if kind == tarfile.REGTYPE else 0
            tf.addfile(info, io.BytesIO(data) if info.size else None)
        info = tarfile.TarInfo("ln/secret")
        info.size = 5
        tf.addfile(info, io.BytesIO(b"pwned"))
    evil.seek(0)
    try:
        copy_into_root(fd, "c", evil, "/data", CopyOptions())
    except OciimgError:
        pass  # refusing is fine too; what matters is where bytes landed
    assert_host_untouched(host)
    assert not (tmp_path / "escape").exists() and not (root.parent / "escape").exists()


def test_a_dir_swapped_for_a_link_mid_copy_never_reaches_the_host(world, tmp_path: Path
                                                                   ) -> None:
    root, fd, host = world
    race = root / "race"
    real = root / "race.real"
    (real / "inner").mkdir(parents=True)
    (real / "inner" / "f").write_text("inside\n")
    link = root / "race.link"
    link.symlink_to(str(host))
    os.rename(real, race)
    stop = threading.Event()

    def swapper() -> None:
        # Alternates /race between the real dir and a link to the host dir: exchange
        # by renames, as a process in the container could.
        while not stop.is_set():
            os.rename(race, real)
            os.rename(link, race)
            os.rename(race, link)
            os.rename(real, race)

    payload = tmp_path / "payload"
    payload.write_text("pwned")
    out = tmp_path / "out"
    out.mkdir()
    thread = threading.Thread(target=swapper)
    thread.start()
    outcomes = {"ok": 0, "refused": 0}
    try:
        for i in range(300):
            (out / f"d{i}").mkdir()
            for attempt in (
                lambda: copy_into_root(fd, "c", str(payload), "/race/inner/secret",
                                       CopyOptions()),
                lambda: copy_into_root(fd, "c", str(payload), "/race/secret", CopyOptions()),
                lambda i=i: copy_out_of_root(fd, "c", "/race/.", str(out / f"d{i}"),
                                             CopyOptions()),
                lambda i=i: copy_out_of_root(fd, "c", "/race/secret", str(out / f"s{i}"),
                                             CopyOptions()),
            ):
                try:
                    attempt()
                    outcomes["ok"] += 1
                except (OciimgError, OSError):
                    outcomes["refused"] += 1
    finally:
        stop.set()
        thread.join()
    assert outcomes["ok"] and outcomes["refused"]  # the race really happened both ways
    assert_host_untouched(host, out)


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod and chown need root")
def test_out_drops_devices_and_setid_bits_unless_archive(world, tmp_path: Path) -> None:
    root, fd, _ = world
    os.mknod(root / "data" / "disk", stat.S_IFBLK | 0o666, os.makedev(8, 0))
    (root / "data" / "suid").write_text("x")
    os.chown(root / "data" / "suid", 1234, 1234)  # before chmod: chown clears setuid
    os.chmod(root / "data" / "suid", 0o4755)
    out = tmp_path / "out"
    options = copy_out_of_root(fd, "c", "/data", str(out), CopyOptions())
    assert not (out / "disk").exists() and options.skipped == ["disk"]
    st = (out / "suid").stat()
    assert stat.S_IMODE(st.st_mode) == 0o755 and st.st_uid == 0
    out2 = tmp_path / "out2"
    copy_out_of_root(fd, "c", "/data", str(out2), CopyOptions(archive=True))
    st = (out2 / "suid").stat()
    assert stat.S_IMODE(st.st_mode) == 0o4755 and st.st_uid == 1234
    assert not (out2 / "disk").exists()


def test_deep_trees_cost_no_recursion_and_no_fds(world, tmp_path: Path) -> None:
    root, fd, _ = world
    depth = 1500  # deeper than Python's recursion limit; more dirs than fds we may hold
    cur = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=cur)
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=cur)
        os.close(cur)
        cur = nxt
    with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=cur), "w") as f:
        f.write("deep\n")
    os.close(cur)
    fds_before = len(os.listdir("/proc/self/fd"))
    out = tmp_path / "out"
    copy_out_of_root(fd, "c", "/d", str(out), CopyOptions())
    buf = io.BytesIO()
    copy_out_of_root(fd, "c", "/d", buf, CopyOptions())
    assert len(os.listdir("/proc/self/fd")) == fds_before
    leaf = os.open(out, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth - 1):
        nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=leaf)
        os.close(leaf)
        leaf = nxt
    try:
        assert os.stat("leaf", dir_fd=leaf).st_size == 5
    finally:
        os.close(leaf)
    assert len(tarfile.open(fileobj=io.BytesIO(buf.getvalue())).getnames()) == depth + 1

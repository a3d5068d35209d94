"""``ociimg export``'s tar of a root: every kind of entry with numeric owners, modes,
times, xattrs and hardlinks, links never followed, GNU tar reads it back to the same
tree; the file is written atomically (a failed export leaves no tar and no temp)."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest

from ociimg.commands import archive
from ociimg.commands.archive import write_atomically, write_tar
from tests.treewalk import tree_manifest

MARKER = b"HOST-SECRET-export"


def build_root(root: Path, host: Path) -> None:
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("root:x:0:0::/root:/bin/sh\n")
    (root / "bin").mkdir()
    (root / "bin" / "tool").write_bytes(b"\x7fELF" + bytes(5000))
    os.chmod(root / "bin" / "tool", 0o755)
    os.link(root / "bin" / "tool", root / "bin" / "tool-hardlink")
    (root / "bin" / "sh").symlink_to("tool")
    (root / "escape").symlink_to(str(host / "secret"))
    (root / "up").symlink_to("../../../../..")
    os.mkfifo(root / "fifo")
    (root / "empty").mkdir(mode=0o700)
    (root / "sparse").write_bytes(b"")
    with open(root / "sparse", "r+b") as f:
        f.truncate(10 << 20)
    os.setxattr(root / "etc" / "passwd", "user.note", b"\xff\x00binary")
    if os.geteuid() == 0:
        os.chown(root / "etc" / "passwd", 123, 456)
        os.mknod(root / "null", stat.S_IFCHR | 0o666, os.makedev(1, 3))
    os.utime(root / "etc" / "passwd", (1_600_000_000, 1_600_000_000))


def test_export_tar_round_trips_through_gnu_tar(tmp_path: Path) -> None:
    root, host = tmp_path / "root", tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(MARKER)
    build_root(root, host)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        buf = io.BytesIO()
        write_tar(buf, fd, ".", contents_only=True)
    finally:
        os.close(fd)
    data = buf.getvalue()
    assert MARKER not in data
    members = {m.name: m for m in tarfile.open(fileobj=io.BytesIO(data))}
    assert members["bin/tool-hardlink"].islnk() or members["bin/tool"].islnk()
    assert members["escape"].issym() and members["escape"].linkname == str(host / "secret")
    assert members["fifo"].isfifo() and members["empty"].isdir()
    assert members["etc/passwd"].mtime == 1_600_000_000
    assert members["etc/passwd"].pax_headers["SCHILY.xattr.user.note"].encode(
        "utf-8", "surrogateescape") == b"\xff\x00binary"
    assert members["sparse"].size == 10 << 20
    if os.geteuid() == 0:
        assert (members["etc/passwd"].uid, members["etc/passwd"].gid) == (123, 456)
        assert members["null"].ischr() and members["null"].devmajor == 1
    if shutil.which("tar"):
        out = tmp_path / "out"
        out.mkdir()
        subprocess.run(["tar", "-x", "--xattrs", "--xattrs-include=*",
                        "--numeric-owner", "-C", str(out)], input=data, check=True)
        assert tree_manifest(out) == tree_manifest(root)


def test_a_failed_export_leaves_nothing_under_the_name(tmp_path: Path, monkeypatch) -> None:
    root, host = tmp_path / "root", tmp_path / "host"
    host.mkdir()
    (host / "secret").write_bytes(MARKER)
    build_root(root, host)
    dest = tmp_path / "out.tar"
    dest.write_bytes(b"previous export")
    seen = []
    real_add = archive._TarWriter.add

    def failing_add(self, pfd, arcname, st):  # the disk fills after a few entries
        seen.append(arcname)
        if len(seen) > 3:
            raise OSError(28, "No space left on device")
        return real_add(self, pfd, arcname, st)

    monkeypatch.setattr(archive._TarWriter, "add", failing_add)
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    try:
        with pytest.raises(OSError, match="No space"):
            write_atomically(dest, lambda f: write_tar(f, fd, ".", contents_only=True))
    finally:
        os.close(fd)
    assert dest.read_bytes() == b"previous export"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["host", "out.tar", "root"]

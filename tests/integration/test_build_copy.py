"""COPY's semantics table (reference.md COPY; BuildKit where vague) and its attacks, on
real directories as root: a destination symlink pointing at the host's /etc stays inside
the image root, a symlink in a source is copied as a link (never followed), a ``.wh.``
name is refused, hardlinks stay hardlinks, created parents get --chown and existing
directories keep their owner."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociimg.build import copy as copying
from ociimg.errors import BuildError


@pytest.fixture
def trees(tmp_path: Path) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "dir" / "sub").mkdir(parents=True)
    (src / "dir" / "f.txt").write_text("f\n")
    (src / "dir" / "sub" / "g.txt").write_text("g\n")
    (src / "one.txt").write_text("one\n")
    os.chmod(src / "one.txt", 0o751)
    dst = tmp_path / "root"
    (dst / "existing").mkdir(parents=True)
    os.chown(dst / "existing", 555, 555)
    return src, dst


def run_copy(src: Path, dst: Path, rels: list[str], dest: str, *, as_dir: bool = False,
             **kw: object) -> None:
    options = copying.CopyOptions(**kw)  # type: ignore[arg-type]
    s = os.open(src, os.O_RDONLY | os.O_DIRECTORY)
    d = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        copying.copy_sources(s, rels, d, dest, options, as_dir=as_dir)
    finally:
        copying.close_links(options)
        os.close(s)
        os.close(d)


@pytest.mark.parametrize(("rels", "dest", "as_dir", "expected"), [
    (["dir"], "/out", False, ["out/f.txt", "out/sub/g.txt"]),      # a dir copies its contents
    (["dir"], "/out/", False, ["out/f.txt", "out/sub/g.txt"]),
    (["one.txt"], "/out", False, ["out"]),                          # a file at the dest path
    (["one.txt"], "/out/", False, ["out/one.txt"]),                 # trailing / : into a dir
    (["one.txt"], "/existing", False, ["existing/one.txt"]),        # an existing dir: into it
    (["one.txt", "dir"], "/multi/", True, ["multi/one.txt", "multi/f.txt",
                                             "multi/sub/g.txt"]),
    (["one.txt"], "/a/b/c/", False, ["a/b/c/one.txt"]),              # parents created
])
def test_copy_semantics(trees: tuple[Path, Path], rels: list[str], dest: str, as_dir: bool,
                        expected: list[str]) -> None:
    src, dst = trees
    run_copy(src, dst, rels, dest, as_dir=as_dir)
    for rel in expected:
        assert (dst / rel).is_file(), rel
        st = (dst / rel).stat()
        assert (st.st_uid, st.st_gid) == (0, 0)
    if "out" in expected:
        assert (dst / "out").read_text() == "one\n"
        assert (dst / "out").stat().st_mode & 0o7777 == 0o751  # the mode is kept


def test_chown_goes_to_created_parents_not_existing_dirs(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    run_copy(src, dst, ["one.txt"], "/existing/new/deeper/", owner=(7, 8),
             parents_owner=(7, 8), chmod=copying.parse_chmod("0600"))
    assert (dst / "existing").stat().st_uid == 555
    for rel in ("existing/new", "existing/new/deeper"):
        st = (dst / rel).stat()
        assert (st.st_uid, st.st_gid) == (7, 8)
    st = (dst / "existing/new/deeper/one.txt").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (7, 8, 0o600)


def test_a_destination_symlink_is_followed_inside_the_root(trees: tuple[Path, Path],
                                                           tmp_path: Path) -> None:
    src, dst = trees
    host_dir = tmp_path / "host-etc"
    host_dir.mkdir()
    (dst / "etc").symlink_to(str(host_dir))          # absolute: the host's dir, by name
    (dst / "up").symlink_to("../../host-etc")       # relative and climbing out
    run_copy(src, dst, ["one.txt"], "/etc/")
    run_copy(src, dst, ["one.txt"], "/up/")
    assert list(host_dir.iterdir()) == []           # nothing reached the host
    assert (dst / str(host_dir).lstrip("/") / "one.txt").is_file()
    assert (dst / "host-etc" / "one.txt").is_file()


def test_source_symlinks_are_copied_as_links_and_hardlinks_kept(trees: tuple[Path, Path],
                                                                tmp_path: Path) -> None:
    src, dst = trees
    (tmp_path / "secret").write_text("host secret\n")
    (src / "dir" / "out-link").symlink_to(str(tmp_path / "secret"))
    os.link(src / "dir" / "f.txt", src / "dir" / "f-hard")
    run_copy(src, dst, ["dir"], "/c/", owner=None)
    assert os.readlink(dst / "c" / "out-link") == str(tmp_path / "secret")
    assert os.stat(dst / "c" / "f.txt").st_ino == os.stat(dst / "c" / "f-hard").st_ino


def test_whiteout_names_are_refused(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    (src / "dir" / ".wh.evil").write_text("")
    with pytest.raises(BuildError, match="cannot be stored in an image layer"):
        run_copy(src, dst, ["dir"], "/w/")


def test_a_file_cannot_replace_a_directory(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    (dst / "existing" / "one.txt").mkdir()
    with pytest.raises(BuildError, match="cannot replace the directory"):
        run_copy(src, dst, ["one.txt"], "/existing/")


def test_excluded_entries_are_left_out(trees: tuple[Path, Path]) -> None:
    src, dst = trees
    run_copy(src, dst, ["dir"], "/x/", excluded=lambda rel, is_dir: rel == "dir/sub")
    assert (dst / "x" / "f.txt").exists() and not (dst / "x" / "sub").exists()


def test_make_dir_creates_workdir_owned_by_the_user(trees: tuple[Path, Path]) -> None:
    _, dst = trees
    fd = os.open(dst, os.O_RDONLY | os.O_DIRECTORY)
    try:
        assert copying.make_dir(fd, "/w/d", (1000, 1000)) is True
        assert copying.make_dir(fd, "/w/d", (1000, 1000)) is False
    finally:
        os.close(fd)
    assert (dst / "w" / "d").stat().st_uid == 1000


def test_dest_path_and_chmod() -> None:
    assert copying.dest_path("x", "/app") == "/app/x"
    assert copying.dest_path(".", "/app") == "/app/"
    assert copying.dest_path("/abs/", "/app") == "/abs/"
    assert copying.parse_chmod("0755")(0o600, False) == 0o755
    assert copying.parse_chmod("u+x,go-w")(0o666, False) == 0o744
    assert copying.parse_chmod("a+X")(0o644, True) == 0o755      # dirs get x
    assert copying.parse_chmod("a+X")(0o644, False) == 0o644     # files only if some x
    assert copying.parse_chmod("a+X")(0o744, False) == 0o755
    assert copying.parse_chmod("o=r,u=rwx")(0o666, False) == 0o764
    assert copying.parse_chmod("u+s")(0o755, False) == 0o4755
    for bad in ("17777", "u+q", "", "u+x,", "755x"):
        with pytest.raises(BuildError):
            copying.parse_chmod(bad)

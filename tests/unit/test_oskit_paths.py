"""resolve_in_root: both implementations (openat2 and the component walk) keep every
path inside the root: symlink loops, absolute links, '..' chains, links to
/proc/self/root, a dir swapped for a symlink mid-walk, huge paths and NUL bytes."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from ociimg.oskit import paths
from ociimg.oskit.paths import MAX_SYMLINKS, open_parent_in_root, resolve_in_root, split_parent
from tests.conftest import need


@pytest.fixture(params=["walk", "openat2"])
def use_openat2(request: pytest.FixtureRequest) -> bool:
    if request.param == "openat2":
        need(paths.HAVE_OPENAT2, "openat2 (Linux >= 5.6) not available")
    return request.param == "openat2"


@pytest.fixture
def rt(tmp_path: Path) -> Path:
    """A root with a canary beside it: every escape would land on ../outside."""
    r = tmp_path / "root"
    (r / "etc").mkdir(parents=True)
    (r / "etc" / "passwd").write_text("inside\n")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "passwd").write_text("outside\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("outside\n")
    return r


def _open(root: Path, path: str, use: bool, **kw: object) -> int:
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        return resolve_in_root(rootfd, path, use_openat2=use, **kw)  # type: ignore[arg-type]
    finally:
        os.close(rootfd)


def _where(fd: int) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    finally:
        os.close(fd)


def _read(root: Path, path: str, use: bool) -> str:
    fd = _open(root, path, use, flags=os.O_RDONLY)
    with os.fdopen(fd) as f:
        return f.read()


def test_plain_and_dotdot_chains_stay_inside(rt: Path, use_openat2: bool) -> None:
    assert _read(rt, "/etc/passwd", use_openat2) == "inside\n"
    assert _read(rt, "etc/passwd", use_openat2) == "inside\n"
    assert _read(rt, "/../../../etc/passwd", use_openat2) == "inside\n"
    assert _read(rt, "/etc/../../etc/./passwd", use_openat2) == "inside\n"
    assert _where(_open(rt, "/..", use_openat2)) == str(rt)
    assert _where(_open(rt, "", use_openat2)) == str(rt)


def test_absolute_and_relative_symlinks_are_clamped(rt: Path, use_openat2: bool) -> None:
    (rt / "abs").symlink_to("/etc")
    (rt / "up").symlink_to("../../../..")
    (rt / "etc" / "rel").symlink_to("../etc/passwd")
    (rt / "deep").symlink_to("etc/../../outside")
    assert _read(rt, "/abs/passwd", use_openat2) == "inside\n"
    assert _read(rt, "/up/etc/passwd", use_openat2) == "inside\n"
    assert _read(rt, "/etc/rel", use_openat2) == "inside\n"
    with pytest.raises(FileNotFoundError):
        _open(rt, "/deep/passwd", use_openat2)  # rt/outside, which does not exist


def test_symlink_loops_and_the_symlink_limit(rt: Path, use_openat2: bool) -> None:
    (rt / "a").symlink_to("b")
    (rt / "b").symlink_to("a")
    (rt / "self").symlink_to("self/x")
    with pytest.raises(OSError) as exc:
        _open(rt, "/a", use_openat2)
    assert exc.value.errno == errno.ELOOP
    with pytest.raises(OSError) as exc:
        _open(rt, "/self", use_openat2)
    assert exc.value.errno == errno.ELOOP
    # A chain of exactly MAX_SYMLINKS links resolves; one more is ELOOP (MAXSYMLINKS).
    (rt / "l0").symlink_to("etc")
    for i in range(1, MAX_SYMLINKS + 1):
        (rt / f"l{i}").symlink_to(f"l{i - 1}")
    assert _where(_open(rt, f"/l{MAX_SYMLINKS - 1}", use_openat2)) == str(rt / "etc")
    with pytest.raises(OSError) as exc:
        _open(rt, f"/l{MAX_SYMLINKS}", use_openat2)
    assert exc.value.errno == errno.ELOOP


def test_proc_self_root_symlink_never_reaches_the_host(rt: Path, use_openat2: bool
                                                       ) -> None:
    (rt / "esc").symlink_to("/proc/self/root/etc/passwd")
    (rt / "esc2").symlink_to("/proc/self/cwd")
    for link in ("/esc", "/esc2"):
        try:
            fd = _open(rt, link, use_openat2, flags=os.O_RDONLY)
        except OSError as exc:  # no /proc inside the root, or a magic link refused
            assert exc.errno in (errno.ENOENT, errno.ELOOP, errno.EXDEV)
        else:
            assert _where(fd).startswith(str(rt) + "/")


def test_magic_links_inside_a_procfs_root_are_refused_or_clamped(use_openat2: bool
                                                                  ) -> None:
    # A root that is itself procfs: /proc/<pid>/root and /cwd are magic links to the
    # host's / and cwd. openat2 refuses them (RESOLVE_NO_MAGICLINKS); the walk reads their
    # text ("/", a path) and resolves it inside the root, where etc/passwd is missing.
    proc = Path(f"/proc/{os.getpid()}")
    for path in ("/root/etc/passwd", "/cwd", "/root", "exe", "fd/0"):
        try:
            fd = _open(proc, path, use_openat2, flags=os.O_RDONLY)
        except OSError as exc:
            assert exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR), (path, exc)
        else:
            where = _where(fd)
            assert where == str(proc) or where.startswith(f"{proc}/"), (path, where)


def test_final_symlink_not_followed_when_asked(rt: Path, use_openat2: bool) -> None:
    (rt / "abs").symlink_to("/etc/passwd")
    fd = _open(rt, "/abs", use_openat2, follow_last=False)
    try:
        assert os.readlink("", dir_fd=fd) == "/etc/passwd"
    finally:
        os.close(fd)
    with pytest.raises(OSError) as exc:
        _open(rt, "/abs", use_openat2, flags=os.O_RDONLY, follow_last=False)
    assert exc.value.errno == errno.ELOOP


def test_create_through_dangling_absolute_symlink_lands_inside(rt: Path,
                                                               use_openat2: bool) -> None:
    (rt / "new").symlink_to("/etc/created")
    fd = _open(rt, "/new", use_openat2, flags=os.O_WRONLY | os.O_CREAT, mode=0o600)
    os.close(fd)
    assert (rt / "etc" / "created").is_file()
    assert not (rt.parent / "etc" / "created").exists()
    with pytest.raises(FileExistsError):  # O_EXCL never follows the final link
        _open(rt, "/new", use_openat2, flags=os.O_WRONLY | os.O_CREAT | os.O_EXCL)


def test_create_parents_makes_dirs_inside_through_links(rt: Path, use_openat2: bool
                                                        ) -> None:
    (rt / "vol").symlink_to("/../../data")
    with pytest.raises(FileNotFoundError):  # parents made; the last is not a parent
        _open(rt, "/vol/a/b", use_openat2, create_parents=True)
    assert (rt / "data" / "a").is_dir()
    fd = _open(rt, "/vol/a/b", use_openat2, flags=os.O_PATH | os.O_DIRECTORY,
               create_parents=True)  # with O_DIRECTORY: mkdir -p
    assert _where(fd) == str(rt / "data" / "a" / "b")
    # without create_parents a missing parent is ENOENT, and nothing is made
    with pytest.raises(FileNotFoundError):
        _open(rt, "/nope/x", use_openat2)
    assert not (rt / "nope").exists()
    assert not (rt.parent / "data").exists()


def test_create_parents_default_refuses_a_file_in_the_way(rt: Path, use_openat2: bool
                                                          ) -> None:
    with pytest.raises(NotADirectoryError):
        _open(rt, "/etc/passwd/x", use_openat2, create_parents=True)
    made: list[str] = []

    def replace(dirfd: int, name: str, st: os.stat_result | None) -> None:
        made.append(name)
        if st is not None:
            os.unlink(name, dir_fd=dirfd)
        os.mkdir(name, 0o755, dir_fd=dirfd)

    os.close(_open(rt, "/etc/passwd/x/y", use_openat2, flags=os.O_PATH | os.O_DIRECTORY,
                   create_parents=replace))
    assert made == ["passwd", "x", "y"]
    assert (rt / "etc" / "passwd" / "x").is_dir()


def test_nul_bytes_and_huge_paths_are_refused(rt: Path, use_openat2: bool) -> None:
    with pytest.raises(OSError) as exc:
        _open(rt, "/etc\0/passwd", use_openat2)
    assert exc.value.errno == errno.EINVAL
    with pytest.raises(OSError) as exc:
        _open(rt, "/a" * 5000, use_openat2)
    assert exc.value.errno == errno.ENAMETOOLONG
    # A long '..' chain under the limit is fine and clamped.
    assert _read(rt, "/.." * 1300 + "/etc/passwd", use_openat2) == "inside\n"


def test_no_xdev_refuses_crossing_into_another_filesystem(tmp_path: Path,
                                                          use_openat2: bool) -> None:
    need(Path("/dev/shm").is_dir() and os.stat("/dev/shm").st_dev != os.stat(tmp_path).st_dev,
         "needs /dev/shm on another filesystem than the tmp dir")
    r = tmp_path / "r"
    r.mkdir()
    (r / "shm").symlink_to("/../../../../../dev/shm")  # clamped: r/dev/shm, missing
    (r / "dev").symlink_to("/")
    with pytest.raises(OSError):
        _open(r, "/shm", use_openat2, no_xdev=True)


def test_split_parent() -> None:
    assert split_parent("/a/b/c") == ("a/b", "c")
    assert split_parent("c") == ("/", "c")
    assert split_parent("/a/./b/") == ("a", "b")
    for bad in ("/", "", "/a/..", "."):
        with pytest.raises(OSError):
            split_parent(bad)


def test_open_parent_replaces_a_final_symlink_inside(rt: Path, use_openat2: bool) -> None:
    """cp's write: the parent is resolved (links clamped), the last name is replaced by a
    rename relative to it, so a planted final link is replaced, never written through."""
    (rt / "etc" / "shadow").symlink_to("../../outside/passwd")
    (rt / "up").symlink_to("/../etc")
    rootfd = os.open(rt, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        pfd, name = open_parent_in_root(rootfd, "/up/shadow", use_openat2=use_openat2)
    finally:
        os.close(rootfd)
    try:
        assert (_where(os.dup(pfd)), name) == (str(rt / "etc"), "shadow")
        dfd = os.open(".", os.O_RDONLY | os.O_DIRECTORY, dir_fd=pfd)  # a real dir fd
        try:
            fd = os.open(".shadow.tmp", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600,
                         dir_fd=dfd)
            os.write(fd, b"new\n")
            os.close(fd)
            os.rename(".shadow.tmp", name, src_dir_fd=dfd, dst_dir_fd=dfd)
        finally:
            os.close(dfd)
    finally:
        os.close(pfd)
    assert (rt / "etc" / "shadow").read_text() == "new\n"
    assert (rt.parent / "outside" / "passwd").read_text() == "outside\n"


def test_race_swapping_a_dir_for_a_symlink_never_escapes(rt: Path, use_openat2: bool
                                                         ) -> None:
    """A thread swaps rt/d (a dir) with a symlink to ../../outside and back while we
    resolve /d/passwd: every open either fails or lands inside the root."""
    (rt / "d").mkdir()
    (rt / "d" / "passwd").write_text("inside\n")
    (rt / "swap").symlink_to("../outside")
    stop = threading.Event()

    def swapper() -> None:
        a, b = str(rt / "d"), str(rt / "swap")
        while not stop.is_set():
            os.rename(a, str(rt / "tmp"))
            os.rename(b, a)
            os.rename(str(rt / "tmp"), b)

    t = threading.Thread(target=swapper)
    t.start()
    seen = set()
    try:
        for _ in range(3000):
            try:
                fd = _open(rt, "/d/passwd", use_openat2, flags=os.O_RDONLY)
            except OSError:
                continue
            where = _where(fd)
            assert where.startswith(str(rt) + "/"), where
            seen.add(where)
    finally:
        stop.set()
        t.join()
    assert seen, "no resolution succeeded during the race"

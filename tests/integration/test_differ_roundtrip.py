"""The differ as root, on real overlay mounts and on the flattened fallback.

Property: for an active snapshot changed through its mount, the parent unpacked flat with
diff(key) applied on top equals the merged view; the overlay upper and the flattened copy,
changed by the same operations, give the same tar bytes; and commit() makes a snapshot
whose mount equals the view too. Trees: the fixture images and seeded random bases and
operation sequences (create/modify/delete/rename files, dirs, symlinks, hardlinks, chmod,
chown, xattrs, lower dirs deleted and made again).
"""

from __future__ import annotations

import io
import os
import random
import shutil
import stat
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ociimg.layers.apply import ApplyOptions, apply_layer
from ociimg.layers.ondisk import UpperNotSelfContained
from ociimg.layers.overlay import overlay_supported
from ociimg.layers.snapshots import SnapshotStore
from ociimg.layers.unpack import unpack_rootfs
from ociimg.spec import chain_ids
from ociimg.store import Store
from tests.conftest import need
from tests.integration.runtime_helpers import mounts_under
from tests.layerimage import build_image, image_from_layout
from tests.treewalk import diff_manifests, tree_manifest

EPOCH = 1_700_000_000  # later than the bases, earlier than anything a test writes
BACKENDS = ["overlay", "copy"]


@pytest.fixture
def work(root: None, tmp_path: Path) -> Iterator[Path]:
    yield tmp_path
    assert mounts_under(tmp_path) == []


def _store(base: Path, backend: str) -> SnapshotStore:
    if backend == "overlay":
        need(overlay_supported(), "overlayfs is not available in this kernel")
    return SnapshotStore(base / f"snapshots-{backend}", rootless=False,
                         use_overlay=backend == "overlay")


def _manifest(path: Path) -> dict:
    out = tree_manifest(path)
    out.pop(".")
    return out


def _check_roundtrip(store: Store, manifest, config, tar: bytes, view: dict, out: Path) -> None:
    flat = out / "flat"
    unpack_rootfs(store, manifest, config, flat, rootless=False)
    apply_layer(flat, io.BytesIO(tar), ApplyOptions(rootless=False))
    assert diff_manifests(view, _manifest(flat)) == []


# --- random bases and operations ------------------------------------------------------
def _random_base(rng: random.Random) -> bytes:
    buf = io.BytesIO()
    dirs = [""]
    files: list[str] = []
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for i in range(rng.randint(30, 60)):
            parent = rng.choice(dirs)
            name = f"{parent}/n{i}" if parent else f"n{i}"
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000 + rng.randint(0, 10**6)
            info.uid, info.gid = rng.choice([(0, 0), (1000, 1000), (33, 33)])
            roll = rng.random()
            if roll < 0.3:
                info.type, info.mode = tarfile.DIRTYPE, rng.choice([0o755, 0o700, 0o1777])
                dirs.append(name)
                tf.addfile(info)
            elif roll < 0.75 or not files:
                data = rng.randbytes(rng.randint(0, 3000))
                info.size, info.mode = len(data), rng.choice([0o644, 0o755, 0o4755, 0o600])
                if rng.random() < 0.3:
                    info.pax_headers = {"SCHILY.xattr.user.base": f"v{i}"}
                files.append(name)
                tf.addfile(info, io.BytesIO(data))
            elif roll < 0.9:
                info.type, info.linkname = tarfile.SYMTYPE, rng.choice(
                    ["/etc/passwd", "../" * 5, rng.choice(files), "missing"])
                tf.addfile(info)
            else:
                info.type, info.linkname = tarfile.LNKTYPE, rng.choice(files)
                tf.addfile(info)
    return buf.getvalue()


class _Ops:
    """Seeded changes made through a mounted view; the same seed makes the same changes
    (by name, content and metadata) on any backend."""

    def __init__(self, root: Path, rng: random.Random) -> None:
        self.root = root
        self.rng = rng
        self.made_files: set[str] = set()  # created here: may be hardlinked
        self.made_dirs: set[str] = set()  # created here: may be renamed
        self.n = 0

    def _entries(self) -> tuple[list[str], list[str]]:
        dirs, others = [""], []
        for cur, dnames, fnames in os.walk(self.root):
            rel = os.path.relpath(cur, self.root)
            rel = "" if rel == "." else rel
            for d in sorted(dnames):
                p = f"{rel}/{d}" if rel else d
                (dirs if not os.path.islink(self.root / p) else others).append(p)
            others.extend(f"{rel}/{f}" if rel else f for f in sorted(fnames))
            dnames.sort()
        return dirs, sorted(others)

    def _new_name(self, parent: str) -> str:
        self.n += 1
        return f"{parent}/o{self.n}" if parent else f"o{self.n}"

    def _forget(self, path: str) -> None:
        for s in (self.made_files, self.made_dirs):
            for p in [p for p in s if p == path or p.startswith(path + "/")]:
                s.discard(p)

    def step(self) -> None:
        dirs, others = self._entries()
        rng = self.rng
        op = rng.choice(["create", "create", "modify", "delete", "rmtree", "recreate",
                         "mkdir", "symlink", "hardlink", "chmod", "chown", "xattr",
                         "rename", "utime", "replace"])
        # Files with no other visible name: st_nlink counts names the view hides too
        # (a lower inode keeps a name a later layer deleted), differently per backend.
        stats = {p: os.lstat(self.root / p) for p in others}
        names: dict[tuple[int, int], int] = {}
        for st in stats.values():
            names[(st.st_dev, st.st_ino)] = names.get((st.st_dev, st.st_ino), 0) + 1
        regular = [p for p, st in stats.items()
                   if stat.S_ISREG(st.st_mode) and names[(st.st_dev, st.st_ino)] == 1]
        real_dirs = [d for d in dirs if d]
        getattr(self, f"_{op}")(dirs, real_dirs, others, regular)

    def _create(self, dirs, real_dirs, others, regular) -> None:
        p = self._new_name(self.rng.choice(dirs))
        (self.root / p).write_bytes(self.rng.randbytes(self.rng.randint(0, 5000)))
        os.chmod(self.root / p, self.rng.choice([0o644, 0o755, 0o600]))
        self.made_files.add(p)

    def _modify(self, dirs, real_dirs, others, regular) -> None:
        if regular:
            with open(self.root / self.rng.choice(regular), "ab") as f:
                f.write(self.rng.randbytes(self.rng.randint(1, 100)))

    def _delete(self, dirs, real_dirs, others, regular) -> None:
        if others:
            p = self.rng.choice(others)
            os.unlink(self.root / p)
            self._forget(p)

    def _rmtree(self, dirs, real_dirs, others, regular) -> None:
        if real_dirs:
            p = self.rng.choice(real_dirs)
            shutil.rmtree(self.root / p)
            self._forget(p)

    def _recreate(self, dirs, real_dirs, others, regular) -> None:
        """A lower dir deleted and made again: overlayfs makes it opaque."""
        if real_dirs:
            p = self.rng.choice(real_dirs)
            shutil.rmtree(self.root / p)
            self._forget(p)
            os.mkdir(self.root / p)
            self.made_dirs.add(p)
            if self.rng.random() < 0.7:
                child = self._new_name(p)
                (self.root / child).write_text("again")
                self.made_files.add(child)

    def _mkdir(self, dirs, real_dirs, others, regular) -> None:
        p = self._new_name(self.rng.choice(dirs))
        os.mkdir(self.root / p, self.rng.choice([0o755, 0o700]))
        self.made_dirs.add(p)

    def _symlink(self, dirs, real_dirs, others, regular) -> None:
        p = self._new_name(self.rng.choice(dirs))
        os.symlink(self.rng.choice(["/etc/shadow", "../../../../..", "x", "/"]), self.root / p)

    def _hardlink(self, dirs, real_dirs, others, regular) -> None:
        # A lower file too: overlayfs copies it up and links the copy (both names
        # then belong in the layer, as in a flattened copy).
        pool = sorted(self.made_files | set(regular))
        if pool:
            src = self.rng.choice(pool)
            p = self._new_name(self.rng.choice(dirs))
            os.link(self.root / src, self.root / p)
            self.made_files.add(p)

    def _chmod(self, dirs, real_dirs, others, regular) -> None:
        pool = real_dirs + regular
        if pool:
            os.chmod(self.root / self.rng.choice(pool), self.rng.choice([0o700, 0o755, 0o2755]))

    def _chown(self, dirs, real_dirs, others, regular) -> None:
        links = [p for p in others if os.path.islink(self.root / p)]
        pool = real_dirs + regular + links  # a name of a shared inode: see step()
        if pool:
            uid = self.rng.choice([0, 1, 1000, 65534])
            os.chown(self.root / self.rng.choice(pool), uid, uid, follow_symlinks=False)

    def _xattr(self, dirs, real_dirs, others, regular) -> None:
        pool = real_dirs + regular
        if pool:
            os.setxattr(self.root / self.rng.choice(pool), "user.k",
                        self.rng.randbytes(self.rng.randint(1, 40)))

    def _rename(self, dirs, real_dirs, others, regular) -> None:
        # Files, and dirs made here: renaming a lower dir needs redirect_dir (off).
        pool = regular + sorted(d for d in self.made_dirs if d in real_dirs)
        if not pool:
            return
        src = self.rng.choice(pool)
        parent = self.rng.choice([d for d in dirs if d != src and not d.startswith(src + "/")])
        dst = self._new_name(parent)
        os.rename(self.root / src, self.root / dst)
        self._forget(src)

    def _utime(self, dirs, real_dirs, others, regular) -> None:
        pool = real_dirs + regular
        if pool:
            t = self.rng.randint(1_500_000_000, 1_650_000_000) * 10**9
            os.utime(self.root / self.rng.choice(pool), ns=(t, t))

    def _replace(self, dirs, real_dirs, others, regular) -> None:
        if regular:  # a file becomes a dir
            p = self.rng.choice(regular)
            os.unlink(self.root / p)
            self._forget(p)
            os.mkdir(self.root / p)
            (self.root / p / "inside").write_text("i")
            self.made_dirs.add(p)


def _run_ops(snaps: SnapshotStore, key: str, seed: int, count: int) -> dict:
    with snaps.mounted(key) as view:
        ops = _Ops(view, random.Random(seed))
        for _ in range(count):
            ops.step()
        # Whatever the ops' own timing, the clamp below makes new mtimes equal.
        return _manifest(view)


def _clamped(view: dict) -> dict:
    return {p: {**e, "mtime": min(e["mtime"], EPOCH)} if "mtime" in e else e
            for p, e in view.items()}


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
def test_random_trees_round_trip_and_both_backends_agree(work: Path, seed: int) -> None:
    rng = random.Random(seed)
    store = Store(work / "store")
    layers = [_random_base(rng) for _ in range(2)]
    manifest, config = build_image(store, layers, how="none")
    parent = chain_ids(config.diff_ids)[-1]
    tars = {}
    for backend in BACKENDS:
        snaps = _store(work, backend)
        snaps.unpack_image(store, manifest, config)
        snaps.prepare("c", parent)
        view = _run_ops(snaps, "c", seed, 300)
        out = io.BytesIO()
        digest = snaps.diff("c", out, source_date_epoch=EPOCH)
        again = io.BytesIO()
        assert snaps.diff("c", again, source_date_epoch=EPOCH) == digest  # deterministic
        tars[backend] = out.getvalue()
        _check_roundtrip(store, manifest, config, out.getvalue(), _clamped(view),
                         work / f"rt-{backend}")
        chain = snaps.commit("c", source_date_epoch=EPOCH)
        snaps.view("committed", chain)
        with snaps.mounted("committed") as committed:
            assert diff_manifests(_clamped(view), _manifest(committed)) == []
        snaps.remove("committed")
        snaps.remove("c")
    assert _listing(tars["overlay"]) == _listing(tars["copy"])
    assert tars["overlay"] == tars["copy"]


def _listing(data: bytes) -> list[tuple]:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.size, m.linkname,
                 sorted(m.pax_headers.items())) for m in tf]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("tag", ["busybox", "multilayer"])
def test_fixture_images_round_trip(work: Path, fixture_layout: Path, backend: str,
                                   tag: str) -> None:
    store = Store(fixture_layout)
    manifest, config = image_from_layout(store, tag)
    snaps = _store(work, backend)
    snaps.unpack_image(store, manifest, config)
    snaps.prepare("c", chain_ids(config.diff_ids)[-1])
    view = _run_ops(snaps, "c", 7, 150)
    out = io.BytesIO()
    snaps.diff("c", out)
    _check_roundtrip(store, manifest, config, out.getvalue(), view, work / "rt")
    snaps.remove("c")


def test_untouched_snapshot_diffs_to_an_empty_tar(work: Path, fixture_layout: Path) -> None:
    store = Store(fixture_layout)
    manifest, config = image_from_layout(store, "multilayer")
    for backend in BACKENDS:
        snaps = _store(work, backend)
        snaps.unpack_image(store, manifest, config)
        snaps.prepare("c", chain_ids(config.diff_ids)[-1])
        out = io.BytesIO()
        snaps.diff("c", out)
        assert out.getvalue() == bytes(1024) and snaps.changes("c") == []
        snaps.remove("c")


def test_docker_diff_lists_changed_parents_as_c(work: Path, fixture_layout: Path) -> None:
    store = Store(fixture_layout)
    manifest, config = image_from_layout(store, "busybox")
    snaps = _store(work, "overlay")
    snaps.unpack_image(store, manifest, config)
    snaps.prepare("c", chain_ids(config.diff_ids)[-1])
    with snaps.mounted("c") as v:
        (v / "etc/new.conf").write_text("x")
        os.makedirs(v / "tmp/a/b")
        names = sorted(os.listdir(v / "bin"))
        os.unlink(v / "bin" / names[0])
    got = [(c.kind, c.path) for c in snaps.changes("c")]
    assert ("C", "/etc") in got and ("A", "/etc/new.conf") in got
    assert ("A", "/tmp/a") in got and ("A", "/tmp/a/b") in got
    assert ("C", "/bin") in got and ("D", f"/bin/{names[0]}") in got
    snaps.remove("c")


def test_redirect_and_metacopy_uppers_are_refused(work: Path, tmp_path: Path) -> None:
    store = Store(work / "store")
    manifest, config = build_image(store, [_random_base(random.Random(5))], how="none")
    snaps = _store(work, "overlay")
    snaps.unpack_image(store, manifest, config)
    snaps.prepare("c", chain_ids(config.diff_ids)[-1])
    upper = snaps.active_dir("c") / "upper"
    (upper / "moved").mkdir()
    # What a mount with redirect_dir=on leaves after renaming a lower dir.
    os.setxattr(upper / "moved", "trusted.overlay.redirect", b"/n0")
    with pytest.raises(UpperNotSelfContained):
        snaps.diff("c", io.BytesIO())
    os.removexattr(upper / "moved", "trusted.overlay.redirect")
    (upper / "meta").write_bytes(b"")
    os.setxattr(upper / "meta", "trusted.overlay.metacopy", b"")
    with pytest.raises(UpperNotSelfContained):
        snaps.changes("c")
    snaps.remove("c")


def test_active_mounts_turn_redirect_dir_off(work: Path) -> None:
    """With redirect_dir=off a lower dir cannot be renamed in place (EXDEV: mv copies),
    so no upper ever holds a redirect the differ would have to follow."""
    store = Store(work / "store")
    manifest, config = build_image(store, [_random_base(random.Random(6))], how="none")
    snaps = _store(work, "overlay")
    snaps.unpack_image(store, manifest, config)
    (mount,) = snaps.prepare("c", chain_ids(config.diff_ids)[-1])
    if not Path("/sys/module/overlay/parameters/redirect_dir").exists():
        pytest.skip("this kernel's overlayfs has no redirect_dir option")
    assert {"index=off", "redirect_dir=off", "metacopy=off"} <= set(mount.options)
    with snaps.mounted("c") as v:
        lower_dir = next(p for p in sorted(v.iterdir()) if p.is_dir() and not p.is_symlink())
        with pytest.raises(OSError) as exc:
            os.rename(lower_dir, v / "renamed")
        assert exc.value.errno == 18  # EXDEV
    snaps.remove("c")


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_new_link_to_a_lower_file_brings_both_names(work: Path, backend: str) -> None:
    """overlayfs copies the lower file up to link it; a flattened copy links it in place:
    either way the layer holds the file and the link, so they stay one inode."""
    store = Store(work / "store")
    base = _random_base(random.Random(9))
    manifest, config = build_image(store, [base], how="none")
    snaps = _store(work, backend)
    snaps.unpack_image(store, manifest, config)
    snaps.prepare("c", chain_ids(config.diff_ids)[-1])
    with snaps.mounted("c") as v:
        lower = next(p.name for p in sorted(v.iterdir())
                     if p.is_file() and not p.is_symlink() and p.stat().st_nlink == 1)
        os.link(v / lower, v / "zz-link")
        view = _manifest(v)
    out = io.BytesIO()
    snaps.diff("c", out)
    members = {m[0]: m for m in _listing(out.getvalue())}
    assert members[lower][1] == b"0" and members["zz-link"][1] == b"1"
    assert members["zz-link"][7] == lower
    _check_roundtrip(store, manifest, config, out.getvalue(), view, work / "rt")
    snaps.remove("c")

"""history, ls, cat, diff and du read images from their compressed layers: the merged
tree follows overlay rules, links resolve inside the image, hostile layers are refused
with one line, and nothing is written anywhere."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from ociimg import spec
from ociimg.digest import Digest
from ociimg.spec import Descriptor
from ociimg.store import Store
from tests.clirun import ociimg
from tests.layerimage import build_image
from tests.tarbuild import D, F, H, L, tar
from tests.tarfuzz import pax_file
from tests.treewalk import tree_manifest


def tag_image(root: Path, name: str, layers: list[bytes], how: str = "gzip",
              history: list[dict] | None = None) -> Store:
    store = Store.open(root)
    manifest, _config = build_image(store, layers, how=how)
    if history is not None:
        cfg = json.loads(store.read_blob(manifest.config.digest))
        cfg["history"] = history
        raw = json.dumps(cfg).encode()
        doc = json.loads(manifest.raw)
        doc["config"] = {"mediaType": spec.OCI_CONFIG, "digest": str(store.put_blob(raw)),
                         "size": len(raw)}
        mraw = json.dumps(doc).encode()
        store.put_blob(mraw)
        manifest = spec.parse_manifest(mraw)
    store.tag(name, Descriptor(spec.OCI_MANIFEST, Digest.of(manifest.raw), len(manifest.raw)))
    return store


BASE = tar(D("etc"), F("etc/passwd", b"root:x:0:0\n"), F("etc/big", b"x" * 5000),
           D("usr"), D("usr/bin"), F("usr/bin/tool", b"TOOL", mode=0o755),
           L("bin", "usr/bin"), H("usr/bin/tool2", "usr/bin/tool"),
           D("var"), F("var/a", b"a"), F("var/b", b"b"))
TOP = tar(F("etc/.wh.big"), F("etc/passwd", b"root:x:0:0\nme:x:1000:1000\n"),
          D("var"), F("var/.wh..wh..opq"), F("var/c", b"c"),
          L("loop1", "loop2"), L("loop2", "loop1"), L("escape", "../../../etc/passwd"),
          L("host", "/proc/self/environ"), L("hostdir", "/proc/self/"))


@pytest.fixture
def store_root(tmp_path: Path) -> Path:
    r = tmp_path / "root"
    tag_image(r, "img", [BASE, TOP], history=[
        {"created": "2024-01-01T00:00:00Z", "created_by": "/bin/sh -c #(nop) ADD file:abc in /"},
        {"created": "2024-01-02T00:00:00Z", "created_by": "/bin/sh -c #(nop)  CMD [\"sh\"]",
         "empty_layer": True},
        {"created": "2024-01-03T00:00:00Z", "created_by": "RUN rm /etc/big " + "x" * 80,
         "comment": "buildkit"}])
    return r


def test_ls_merged_tree_follows_overlay_rules(store_root: Path) -> None:
    proc = ociimg(store_root, "ls", "img")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "/etc/passwd" in lines and "/usr/bin/tool" in lines and "/bin -> usr/bin" in lines
    assert "/etc/big" not in lines  # deleted by a whiteout
    assert "/var/c" in lines and "/var/a" not in lines  # opaque dir hides the lower files
    assert lines == sorted(lines, key=lambda x: x.split(" ")[0])


def test_ls_long_shows_layer_owner_mode_and_json(store_root: Path) -> None:
    proc = ociimg(store_root, "ls", "-l", "img", "/etc")
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.endswith("/etc/passwd"))
    assert line.split()[0] == "-rw-r--r--" and line.split()[2:3] == ["26"] and " L1 " in line
    doc = json.loads(ociimg(store_root, "ls", "--json", "img", "/bin").stdout)  # through the link
    assert [d["path"] for d in doc] == ["/usr/bin/tool", "/usr/bin/tool2"]
    assert doc[0]["mode"] == "0755" and doc[0]["layer"] == 0


def test_ls_one_layer_shows_whiteouts_as_deletions(store_root: Path) -> None:
    proc = ociimg(store_root, "ls", "--layer", "1", "img")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "/etc/big (deleted)" in lines and "/var/ (opaque: lower contents hidden)" in lines
    assert ociimg(store_root, "ls", "--layer", "7", "img").returncode == 1


@pytest.mark.parametrize("path,content", [("/etc/passwd", b"root:x:0:0\nme:x:1000:1000\n"),
                                          ("/bin/tool", b"TOOL"), ("/usr/bin/tool2", b"TOOL"),
                                          ("escape", b"root:x:0:0\nme:x:1000:1000\n")])
def test_cat_resolves_links_inside_the_image(store_root: Path, path: str, content: bytes) -> None:
    proc = ociimg(store_root, "cat", "img", path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.encode() == content


@pytest.mark.parametrize("path,needle", [("/loop1", "too many symbolic links"),
                                         ("/host", "no such file"),
                                         ("/hostdir/environ", "no such file"),
                                         ("/etc/big", "no such file"), ("/etc", "directory")])
def test_cat_refuses_loops_deleted_files_and_dirs(store_root: Path, path: str, needle: str) -> None:
    proc = ociimg(store_root, "cat", "img", path, timeout=30)
    assert proc.returncode == 1 and needle in proc.stderr and proc.stdout == ""
    assert "Traceback" not in proc.stderr


def test_history_newest_first_truncated_and_json(store_root: Path) -> None:
    proc = ociimg(store_root, "history", "img")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 4 and lines[1].split()[1] == "2024-01-03"
    assert "…" in lines[1] and "CMD [\"sh\"]" in lines[2] and "<missing>" in lines[2]
    assert "buildkit" in lines[1]
    rows = json.loads(ociimg(store_root, "history", "--json", "--no-trunc", "img").stdout)
    assert [r["emptyLayer"] for r in rows] == [False, True, False]
    assert rows[0]["createdBy"].endswith("x" * 80) and rows[0]["size"] > 0
    # docker's SIZE is the layer's uncompressed size: here from the gzip trailer
    assert [r["uncompressedSize"] for r in rows] == [len(TOP), 0, len(BASE)]


HOSTILE = {
    "dotdot": tar(F("../../etc/evil", b"x")),
    "deep": tar(F("/".join(["d"] * 300) + "/f", b"x")),
    "root-file": tar(F("/", b"x")),
    "truncated": tar(F("a", b"x" * 4096))[:1500],
    "hardlink-missing": tar(H("a", "nowhere")),
    "bare-whiteout": tar(F("a", b"x"), F(".wh.")),
    "dotdot-whiteout": tar(F("a", b"x"), F("d/.wh...")),
    "mtime-nan": tar(pax_file("a", b"x", mtime="nan")),
    "mtime-huge": tar(pax_file("a", b"x", mtime="1e30")),
    "sparse-backwards": tar(pax_file("a", b"helloworld", **{
        "GNU.sparse.map": "4096,5,0,5", "GNU.sparse.size": "8192"})),
    "sparse-outside": tar(pax_file("a", b"hello", **{
        "GNU.sparse.map": "9000,5", "GNU.sparse.size": "8192"})),
    "hardlink-dotdot": tar(F("a", b"x"), H("b", "../a")),
}


COMMANDS = [("ls",), ("ls", "--layer", "0"), ("cat", "x", "/a")]


# One layer's listing resolves nothing: a hardlink to a missing file is listed as such.
@pytest.mark.parametrize("case,command", [
    (case, command) for case in sorted(HOSTILE) for command in COMMANDS
    if not (case == "hardlink-missing" and command[1:2] == ("--layer",))])
def test_hostile_layers_refused_with_one_line(tmp_path: Path, case: str,
                                              command: tuple[str, ...]) -> None:
    root = tmp_path / "root"
    tag_image(root, "bad", [HOSTILE[case]])
    before = tree_manifest(tmp_path)
    args = [command[0], "bad", *command[2:]] if command[0] == "cat" else [*command, "bad"]
    proc = ociimg(root, *args)
    assert proc.returncode == 1, proc.stdout
    assert proc.stderr.startswith("ociimg: error:") and "Traceback" not in proc.stderr
    assert tree_manifest(tmp_path) == before  # nothing written, not even in the root


def test_absolute_names_are_rooted_in_the_image(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tag_image(root, "abs", [tar(F("/etc/x", b"1"), F("./etc/y", b"2"))])
    assert ociimg(root, "ls", "abs").stdout.splitlines() == ["/etc", "/etc/x", "/etc/y"]


def _many(root: Path, name: str, count: int) -> None:
    import io
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT) as tf:
        for i in range(count):
            tf.addfile(tarfile.TarInfo(f"d{i % 100}/f{i}"))
    tag_image(root, name, [buf.getvalue()], how="zstd")


def _peak_rss_kib(root: Path, *args: str) -> tuple[int, int]:
    """(peak RSS KiB, lines printed) of one `ociimg` run, by GNU time: the child's own
    rusage would carry this test process's high-water mark across exec."""
    import os
    import subprocess
    import sys
    import tempfile

    from tests.clirun import WORKTREE
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    with tempfile.NamedTemporaryFile("r") as report:
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", report.name,
                               sys.executable, "-m", "ociimg", "--root", str(root), *args],
                              capture_output=True, env=env, check=True)
        return int(report.read().split()[-1]), proc.stdout.count(b"\n")


def test_huge_entry_count_streams_one_layer(tmp_path: Path) -> None:
    """300k entries listed with about the memory of 10k: one layer's listing keeps no
    entry (the merged tree, which must, grows by tens of MiB for the same layer)."""
    root = tmp_path / "root"
    _many(root, "few", 10_000)
    _many(root, "many", 300_000)
    few, n_few = _peak_rss_kib(root, "ls", "--layer", "0", "few")
    many, n_many = _peak_rss_kib(root, "ls", "--layer", "0", "many")
    merged, _n = _peak_rss_kib(root, "ls", "many")
    assert (n_few, n_many) == (10_000, 300_000)
    assert many - few < 24 << 10, (few, many)  # the read-ahead queue: 8 MiB
    assert merged - few > 64 << 10, (few, merged)  # the check can see a kept listing


def test_diff_two_images_by_content_digest(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tag_image(root, "one", [tar(F("same", b"s", mtime=1), F("changed", b"old"),
                               F("gone", b"g"), F("chmod", b"m"), L("link", "a"))])
    tag_image(root, "two", [tar(F("same", b"s", mtime=2), F("changed", b"new"),
                               F("new", b"n"), F("chmod", b"m", mode=0o600), L("link", "b"))])
    proc = ociimg(root, "diff", "one", "two")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == ["C /changed", "C /chmod", "D /gone", "C /link",
                                        "A /new"]
    doc = json.loads(ociimg(root, "diff", "--json", "one", "two").stdout)
    assert {d["path"]: d.get("changed") for d in doc if d["kind"] == "C"} == {
        "/changed": ["content"], "/chmod": ["mode"], "/link": ["link target"]}


def test_diff_hostile_layer_refused(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tag_image(root, "ok", [tar(F("a", b"1"))])
    tag_image(root, "bad", [HOSTILE["dotdot"]])
    proc = ociimg(root, "diff", "ok", "bad")
    assert proc.returncode == 1 and "'..'" in proc.stderr and "Traceback" not in proc.stderr


def test_du_wasted_bytes_as_dive_counts_them(tmp_path: Path) -> None:
    root = tmp_path / "root"
    tag_image(root, "w", [tar(D("d"), F("d/blob", b"x" * 6000), F("keep", b"k" * 1000),
                              F("over", b"o" * 500)),
                          tar(F(".wh.d"), F("over", b"O" * 1500)),
                          tar(F("new", b"n" * 2000))])
    doc = json.loads(ociimg(root, "du", "--json", "w").stdout)
    assert [layer["size"] for layer in doc["layers"]] == [7500, 1500, 2000]
    # dive: the dir d (its entry: 0 bytes, its deletion: the 6000 it held) and over
    # (500 + 1500); paths touched once (keep, new, d/blob) waste nothing
    assert doc["wastedBytes"] == 6000 + 2000
    assert {w["path"]: w["totalSize"] for w in doc["worst"]} == {"/d": 6000, "/over": 2000}
    ok = ociimg(root, "du", "--max-wasted", "200%", "w")
    assert ok.returncode == 1 and "0% to 100%" in ok.stderr
    assert ociimg(root, "du", "--max-wasted", "100%", "w").returncode == 0
    gate = ociimg(root, "du", "--max-wasted", "10%", "w")
    assert gate.returncode == 1 and "above --max-wasted 10%" in gate.stderr
    assert "Wasted:" in gate.stdout and "/d" in gate.stdout
    assert ociimg(root, "du", "--max-wasted", "20k", "w").returncode == 0


def test_ls_of_one_file_and_layer_by_digest(store_root: Path) -> None:
    assert ociimg(store_root, "ls", "img", "/etc/passwd").stdout == "/etc/passwd\n"
    store = Store.open(store_root)
    manifest = store.image_for("img")[1]
    digest = str(manifest.layers[1].digest)[:19]
    by_digest = ociimg(store_root, "ls", "--layer", digest, "img")
    assert by_digest.stdout == ociimg(store_root, "ls", "--layer", "1", "img").stdout
    assert "/etc/big (deleted)" in by_digest.stdout
    missing = ociimg(store_root, "ls", "img", "/nope")
    assert missing.returncode == 1 and "no such file" in missing.stderr


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_every_transport_reads_the_same_files(store_root: Path, tmp_path: Path,
                                              fmt: str) -> None:
    archive = tmp_path / "img.tar"
    saved = ociimg(store_root, "save", "img", "-o", str(archive), "--format", fmt)
    assert saved.returncode == 0, saved.stderr
    source = f"{fmt}:{archive}"
    assert ociimg(store_root, "ls", "-l", source).stdout == \
        ociimg(store_root, "ls", "-l", "img").stdout
    assert ociimg(store_root, "cat", source, "/bin/tool").stdout == "TOOL"
    assert ociimg(store_root, "diff", "img", source).stdout == ""


@pytest.mark.parametrize("fmt", ["oldgnu", "pax"])
def test_cat_of_a_sparse_file_fills_the_holes(tmp_path: Path, fmt: str) -> None:
    """GNU tar's sparse members (both encodings): cat writes the holes as zeros, diff
    sees the same content digest as the same file stored plainly."""
    import subprocess
    src = tmp_path / "src"
    src.mkdir()
    with open(src / "sparse", "wb") as f:
        f.write(b"head")
        f.seek(1 << 16)
        f.write(b"tail")
    archive = tmp_path / "s.tar"
    subprocess.run(["tar", f"--format={fmt}", "--sparse", "-cf", archive, "-C", src,
                    "sparse"], check=True)
    root = tmp_path / "root"
    tag_image(root, "sparse", [archive.read_bytes()])
    tag_image(root, "plain", [tar(F("sparse", (src / "sparse").read_bytes(),
                                    mode=(src / "sparse").stat().st_mode & 0o7777,
                                    uid=0, gid=0))])
    out = ociimg(root, "cat", "sparse", "/sparse")
    assert out.returncode == 0, out.stderr
    assert out.stdout.encode() == (src / "sparse").read_bytes()
    changes = json.loads(ociimg(root, "diff", "--json", "plain", "sparse").stdout)
    assert all("content" not in c.get("changed", []) for c in changes), changes


def test_mutated_tars_list_or_fail_cleanly(tmp_path: Path) -> None:
    """The tar fuzz corpus and mutations of it (tests/tarfuzz.py) through the listing and
    the merged tree with content hashing: an OciimgError or a listing, never another
    exception (which the CLI would show as a traceback)."""
    import io
    import random

    from ociimg.commands.imagefs import LayerReader, MergedTree
    from ociimg.errors import OciimgError
    from tests.tarfuzz import corpus, mutate

    seeds = corpus(tmp_path)
    rng = random.Random(11)
    for i in range(1500):
        data = seeds[i] if i < len(seeds) else mutate(rng.choice(seeds), rng)
        tree = MergedTree()
        try:
            reader = LayerReader(io.BytesIO(data), spec.OCI_LAYER)
            for n, entry in enumerate(reader.entries()):
                if entry.kind == "file":
                    entry.digest = reader.digest()
                tree.apply(entry, n % 2, n)
            list(tree.walk())
        except OciimgError:
            pass

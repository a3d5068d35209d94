"""Build context (ociimg.build.context): globbing, resolution, digests, context tars."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from pathlib import Path

import pytest
import zstandard

from ociimg.build.context import BuildContext, load_ignore_rules
from ociimg.build.ignore import IgnoreRules
from ociimg.errors import BuildError, ContextEscape, ContextNotFound, UnsafeArchive
from tests.tarbuild import HOSTILE, D, F, L, tar, with_canary
from tests.treewalk import make_canary, tree_manifest


@pytest.fixture
def ctx_dir(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    for rel, data in {"a.txt": "a", "b.txt": "b", "[x].txt": "x", "src/x.py": "x",
                      "src/sub/y.py": "y", "src/sub/z.txt": "z", "docs/keep.md": "k",
                      "docs/drop.md": "d", "Containerfile": "FROM scratch\n"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(data)
    os.symlink("src", root / "link_in")
    os.symlink("/etc", root / "link_out")
    os.symlink("../..", root / "src" / "up")
    return root


def context(root: Path, rules: str = "") -> BuildContext:
    return BuildContext.from_dir(root, IgnoreRules.parse(rules))


# Dockerfile reference "COPY" (source paths: Go filepath.Match wildcards, relative to the
# context) and BuildKit testCopyWildcards/testEmptyWildcard: no match is an empty list,
# the builder decides whether that is an error.
GLOB_ROWS = [
    ("a.txt", ["a.txt"]),
    ("./a.txt", ["a.txt"]),
    ("/a.txt", ["a.txt"]),
    ("src/../a.txt", ["a.txt"]),
    ("*.txt", ["[x].txt", "a.txt", "b.txt"]),
    ("?.txt", ["a.txt", "b.txt"]),
    ("[ab].txt", ["a.txt", "b.txt"]),
    ("[^a].txt", ["b.txt"]),
    ("\\[x\\].txt", ["[x].txt"]),
    ("src/*.py", ["src/x.py"]),
    ("src/*/*.py", ["src/sub/y.py"]),
    ("**/*.py", ["src/sub/y.py", "src/x.py"]),
    ("src/**", ["src", "src/sub", "src/sub/y.py", "src/sub/z.txt", "src/up", "src/x.py"]),
    ("src", ["src"]),
    ("src/", ["src"]),
    ("nomatch*", []),
    ("missing", []),
    ("link_in/x.py", ["link_in/x.py"]),          # a literal symlink inside the context
    ("link_in/*.py", ["link_in/x.py"]),
    ("*/x.py", ["src/x.py"]),                     # wildcards do not descend through links
    ("a.txt/x", []),
]


@pytest.mark.parametrize(("pattern", "expected"), GLOB_ROWS)
def test_glob(ctx_dir: Path, pattern: str, expected: list[str]) -> None:
    assert context(ctx_dir).glob(pattern) == expected


# Reference ".dockerignore file": excluded paths are not in the context for COPY.
def test_glob_honours_ignore(ctx_dir: Path) -> None:
    ctx = context(ctx_dir, "*.txt\n!b.txt\ndocs\n!docs/keep.md\n")
    assert ctx.glob("*.txt") == ["b.txt"]
    assert ctx.glob("docs/*") == ["docs/keep.md"]
    assert ctx.glob("docs") == ["docs"]          # kept: it holds a re-included file
    assert context(ctx_dir, "docs\n").glob("docs") == []


@pytest.mark.parametrize("pattern", ["../x", "..", "src/../../x", "link_out/*", "link_out/passwd"])
def test_glob_refuses_escapes(ctx_dir: Path, pattern: str) -> None:
    with pytest.raises(ContextEscape):
        context(ctx_dir).glob(pattern)


def test_resolve(ctx_dir: Path) -> None:
    ctx = context(ctx_dir, "docs/drop.md\n")
    assert ctx.resolve("a.txt") == ctx.root / "a.txt"
    assert ctx.resolve("link_in/sub/y.py") == ctx.root / "src/sub/y.py"
    assert ctx.resolve(".") == ctx.root
    with pytest.raises(ContextNotFound, match="excluded"):
        ctx.resolve("docs/drop.md")
    with pytest.raises(ContextNotFound, match="not found"):
        ctx.resolve("nope")


# Issue 10 "Errors": a COPY source outside the context (../x, symlinks leading out) is
# one clear error, never a clamp into the context and never a read outside it.
@pytest.mark.parametrize("path", ["../x", "src/../../x", "link_out", "link_out/passwd",
                                  "src/up", "src/up/x", "link_in/up/etc"])
def test_resolve_refuses_escapes(ctx_dir: Path, path: str) -> None:
    with pytest.raises(ContextEscape):
        context(ctx_dir).resolve(path)


def test_symlink_to_shadow_is_never_read(tmp_path: Path, ctx_dir: Path) -> None:
    # Hostile context: links to a host secret (here a canary standing in for
    # /etc/shadow, plus the real one) must not be read through by any entry point.
    canary = make_canary(tmp_path)
    os.symlink(canary / "secret", ctx_dir / "secret")
    os.symlink("/etc/shadow", ctx_dir / "shadow")
    ctx = context(ctx_dir)
    for path in ("secret", "shadow"):
        with pytest.raises(ContextEscape):
            ctx.read_file(path)
        with pytest.raises(ContextEscape):
            ctx.resolve(path)
        with pytest.raises(ContextEscape):
            ctx.digest([path])
    before = ctx.digest(["."])
    (canary / "secret").write_text("changed secret\n")
    assert ctx.digest(["."]) == before            # the link's target text, not the file


def test_read_file_ignores_exclusions(ctx_dir: Path) -> None:
    ctx = context(ctx_dir, "Containerfile\n.dockerignore\n")
    assert ctx.read_file("Containerfile") == b"FROM scratch\n"
    with pytest.raises(ContextNotFound):
        ctx.resolve("Containerfile")              # readable by the builder, not COPYable


def test_read_file_refuses_fifo(ctx_dir: Path) -> None:
    os.mkfifo(ctx_dir / "fifo")
    with pytest.raises(BuildError, match="not a regular file"):
        context(ctx_dir).read_file("fifo")


def test_walk_yields_kept_entries_and_their_parents(ctx_dir: Path) -> None:
    ctx = context(ctx_dir, "docs\n!docs/keep.md\nsrc/sub\n")
    assert [rel for rel, _ in ctx.walk(".")] == [
        ".", "Containerfile", "[x].txt", "a.txt", "b.txt", "docs", "docs/keep.md",
        "link_in", "link_out", "src", "src/up", "src/x.py"]
    assert [rel for rel, _ in ctx.walk("link_in")] == ["src", "src/up", "src/x.py"]


# Issue 10 "Layers, cache": the step cache keys on content, not mtimes (buildah#2215).
def test_digest_ignores_mtime_and_location(tmp_path: Path, ctx_dir: Path) -> None:
    ctx = context(ctx_dir)
    before = ctx.digest(["src", "a.txt"])
    os.utime(ctx_dir / "src/x.py", (1, 1))
    os.utime(ctx_dir / "src", (2, 2))
    assert ctx.digest(["src", "a.txt"]) == before
    moved = tmp_path / "elsewhere"
    ctx_dir.rename(moved)
    assert context(moved).digest(["src", "a.txt"]) == before


@pytest.mark.parametrize("change", ["byte", "mode", "link", "new-file", "rename"])
def test_digest_sees_content_changes(ctx_dir: Path, change: str) -> None:
    ctx = context(ctx_dir)
    before = ctx.digest(["src"])
    if change == "byte":
        (ctx_dir / "src/x.py").write_text("X")
    elif change == "mode":
        os.chmod(ctx_dir / "src/x.py", 0o755)
    elif change == "link":
        os.unlink(ctx_dir / "src/up")
        os.symlink("..", ctx_dir / "src/up")
    elif change == "new-file":
        (ctx_dir / "src/new").write_text("")
    else:
        os.rename(ctx_dir / "src/x.py", ctx_dir / "src/w.py")
    assert ctx.digest(["src"]) != before


def test_digest_skips_excluded(ctx_dir: Path) -> None:
    ctx = context(ctx_dir, "src/sub\n")
    before = ctx.digest(["src"])
    (ctx_dir / "src/sub/y.py").write_text("changed")
    assert ctx.digest(["src"]) == before


def test_load_ignore_rules_order(ctx_dir: Path) -> None:
    ctx = context(ctx_dir)
    assert not load_ignore_rules(ctx).excluded("a.txt")
    (ctx_dir / ".dockerignore").write_text("a.txt\n")
    assert load_ignore_rules(ctx).excluded("a.txt")
    (ctx_dir / ".containerignore").write_text("b.txt\n")
    assert load_ignore_rules(ctx).excluded("b.txt") and not load_ignore_rules(ctx).excluded("a.txt")
    (ctx_dir / "Containerfile.dockerignore").write_text("src\n")
    assert load_ignore_rules(ctx, "Containerfile").excluded("src/x.py")
    os.unlink(ctx_dir / ".containerignore")
    os.symlink("/etc/passwd", ctx_dir / ".containerignore")
    with pytest.raises(ContextEscape):
        load_ignore_rules(ctx)


# -- context tars (`ociimg build -` and the Engine API's POST /build body) -------------

CONTEXT_TAR = tar(D("app"), F("app/main.py", b"print(1)\n"), F("Containerfile", b"FROM scratch\n"),
                  L("app/link", "main.py"), F(".dockerignore", b"*.log\n"), F("x.log", b"log"))
COMPRESSORS = {
    "plain": lambda b: b, "gzip": gzip.compress, "bzip2": bz2.compress, "xz": lzma.compress,
    "zstd": zstandard.ZstdCompressor().compress,
}


@pytest.mark.parametrize("kind", sorted(COMPRESSORS))
def test_from_tar_any_compression(tmp_path: Path, kind: str) -> None:
    ctx = BuildContext.from_tar(io.BytesIO(COMPRESSORS[kind](CONTEXT_TAR)), tmp_path / "work")
    assert ctx.read_file("Containerfile") == b"FROM scratch\n"
    assert ctx.glob("app/*") == ["app/link", "app/main.py"]
    assert ctx.glob("*.log") == []               # the tar's own .dockerignore applies
    assert (ctx.root / "app/link").is_symlink()


@pytest.mark.parametrize("case", sorted(k for k, layers in HOSTILE.items() if len(layers) == 1))
def test_hostile_context_tar_never_escapes(tmp_path: Path, case: str) -> None:
    canary = make_canary(tmp_path)
    before = tree_manifest(canary)
    try:
        BuildContext.from_tar(io.BytesIO(with_canary(HOSTILE[case][0], canary)), tmp_path / "work")
    except (UnsafeArchive, BuildError):
        assert not (tmp_path / "work").exists()  # nothing half-extracted is left
    assert tree_manifest(canary) == before
    assert sorted(p.name for p in tmp_path.iterdir()) in (["canary"], ["canary", "work"])


def test_context_tar_member_count_is_bounded(tmp_path: Path) -> None:
    many = tar(*(F(f"f{i}") for i in range(300)))
    with pytest.raises(UnsafeArchive, match="more than 100 entries"):
        BuildContext.from_tar(io.BytesIO(many), tmp_path / "work", max_entries=100)
    assert not (tmp_path / "work").exists()


def test_context_tar_size_is_bounded(tmp_path: Path) -> None:
    big = tar(F("a", b"x" * 5000), F("b", b"y" * 5000))
    with pytest.raises(UnsafeArchive, match="exceed"):
        BuildContext.from_tar(io.BytesIO(gzip.compress(big)), tmp_path / "work", max_bytes=8000)


def test_whiteout_names_are_refused(ctx_dir: Path) -> None:
    # anchors-next trap 16: a context file named .wh.* would become a deletion.
    (ctx_dir / "src" / ".wh.x.py").write_text("")
    with pytest.raises(BuildError, match=r"src/\.wh\.x\.py: a name starting with \.wh\."):
        context(ctx_dir).digest(["src"])
    assert context(ctx_dir, "**/.wh.*").digest(["src"])  # unless ignored

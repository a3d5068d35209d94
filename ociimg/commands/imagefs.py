"""An image's files read straight from its compressed layer blobs, never unpacked:
one layer's entries as they stream by (``ls --layer``), and the merged tree of all
layers (``ls``, ``cat``, ``diff``, ``du``).

The tar is read by the applier's reader (Prefetcher → tarfile mode "r:" → MemberReader;
decompression by magic bytes), so a listing sees exactly the entries an unpack would,
with the same refusals: ``..`` components and trees deeper than MAX_DEPTH are an
UnsafeArchive, a truncated stream an InvalidDocument. Memory: a layer listing holds one
entry at a time; the merged tree holds one small node per visible path.
"""

from __future__ import annotations

import gc
import hashlib
import io
import shutil
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from ociimg.errors import InvalidArgument, InvalidDocument, UnsafeArchive
from ociimg.layers import paths
from ociimg.layers.compression import open_decompressed
from ociimg.layers.filedata import check_sparse_map
from ociimg.layers.members import MemberReader
from ociimg.layers.stream import ForwardReader, Prefetcher
from ociimg.layers.tarinfo import LayerTarInfo, mtime_ns

if TYPE_CHECKING:
    from ociimg.commands.imagesource import OpenedImage

WHITEOUT_PREFIX = ".wh."
OPAQUE_MARKER = ".wh..wh..opq"
MAX_ENTRIES = 10_000_000  # per layer, as the applier (decompression bombs)

_KINDS = {tarfile.REGTYPE: "file", tarfile.AREGTYPE: "file", tarfile.CONTTYPE: "file",
          tarfile.DIRTYPE: "dir", tarfile.SYMTYPE: "symlink", tarfile.LNKTYPE: "hardlink",
          tarfile.CHRTYPE: "char", tarfile.BLKTYPE: "block", tarfile.FIFOTYPE: "fifo",
          tarfile.GNUTYPE_SPARSE: "file"}
TYPE_BITS = {"file": 0o100000, "dir": 0o040000, "symlink": 0o120000, "hardlink": 0o100000,
             "char": 0o020000, "block": 0o060000, "fifo": 0o010000}


@dataclass(slots=True)
class Entry:
    """One tar entry of a layer. ``path`` has no leading "/"; for a whiteout it is the
    path deleted (kind "whiteout") or the dir made opaque (kind "opaque")."""

    path: str
    kind: str
    mode: int = 0
    uid: int = 0
    gid: int = 0
    size: int = 0
    mtime: int = 0
    linkname: str = ""
    digest: str | None = None  # sha256 of the content, when asked for


def entry_of(info: tarfile.TarInfo) -> Entry:
    if "\0" in info.name or "\0" in info.linkname:
        raise InvalidDocument(f"tar entry {info.name[:200]!r}: NUL byte in its path or link "
                              "target", hint="the layer is broken or hostile")
    parts = paths.split_name(info.name)
    base = parts[-1] if parts else ""
    if base == OPAQUE_MARKER:
        return Entry("/".join(parts[:-1]), "opaque")
    if base.startswith(WHITEOUT_PREFIX):
        name = base[len(WHITEOUT_PREFIX):]
        if name in ("", ".", ".."):  # image-spec layer.md: a bare .wh. SHOULD error
            raise UnsafeArchive(f"tar entry {info.name[:200]!r}: whiteout without a name")
        return Entry("/".join([*parts[:-1], name]), "whiteout")
    kind = _KINDS.get(info.type, "other")
    if not parts and kind != "dir":  # umoci CVE-2021-29136, as the applier
        raise UnsafeArchive(f"tar entry {info.name!r}: the root must stay a directory")
    link = info.linkname
    if kind == "hardlink":
        link = "/".join(paths.split_name(link))
    return Entry("/".join(parts), kind, info.mode & 0o7777, info.uid, info.gid,
                 info.size if kind == "file" else 0, mtime_ns(info) // 1_000_000_000, link)


class LayerReader:
    """The entries of one compressed layer blob, in tar order. While the generator of
    ``entries()`` is suspended on a file, ``pieces()`` reads that file's content."""

    def __init__(self, blob: BinaryIO, media_type: str, what: str = "layer",
                 max_entries: int = MAX_ENTRIES) -> None:
        self._blob = blob
        self._media_type = media_type
        self._what = what
        self._max = max_entries
        self._ahead: Prefetcher | None = None
        self._info: tarfile.TarInfo | None = None
        self._tf: tarfile.TarFile | None = None

    def entries(self) -> Iterator[Entry]:
        stream = open_decompressed(self._blob, self._media_type, self._what)
        collecting = gc.isenabled()
        gc.disable()  # many small objects, no cycles (see layers/apply.py)
        try:
            with Prefetcher(stream) as ahead:
                self._ahead = ahead
                yield from self._read(ForwardReader(ahead))
        except (tarfile.TarError, UnicodeError, io.UnsupportedOperation) as exc:
            raise InvalidDocument(f"{self._what}: {exc}",
                                  hint="the layer is not a valid tar archive") from exc
        finally:
            self._ahead = None
            if collecting:
                gc.enable()

    def _read(self, reader: ForwardReader) -> Iterator[Entry]:
        count = 0
        with tarfile.open(fileobj=reader, mode="r:", tarinfo=LayerTarInfo) as tf:
            self._tf = tf
            members = MemberReader(tf, reader.source)
            while (info := members.next()) is not None:
                count += 1
                if count > self._max:
                    raise UnsafeArchive(f"{self._what}: more than {self._max} entries",
                                        hint="the layer is hostile or broken")
                if info.sparse is not None:  # refused here as the applier refuses it
                    check_sparse(info, tf.offset)
                self._info = info
                yield entry_of(info)
                self._info = None
                tf.members.clear()
            if not reader.ended_at(tf.offset):
                raise InvalidDocument(f"{self._what}: truncated or corrupt header at byte "
                                      f"{tf.offset} (no end-of-archive block)",
                                      hint="the layer is truncated or damaged")

    def pieces(self) -> Iterator[bytes | memoryview]:
        """The current file's content, holes of a sparse file as zeros."""
        info, ahead = self._info, self._ahead
        assert info is not None and ahead is not None and self._tf is not None
        if ahead.position != info.offset_data:
            return  # already read
        if info.sparse is None:
            yield from ahead.chunks(info.size)
            return
        pos = 0
        for offset, length in info.sparse:
            if not length:  # old GNU maps end in empty (0, 0) slots
                continue
            yield from _zeros(offset - pos)
            yield from ahead.chunks(length)
            pos = offset + length
        yield from _zeros(info.size - pos)

    def digest(self) -> str:
        h = hashlib.sha256()
        for piece in self.pieces():
            h.update(piece)
        return f"sha256:{h.hexdigest()}"


def check_sparse(info: tarfile.TarInfo, data_end: int) -> None:
    """The applier's sparse-map check, and segments in order: the content is written
    as a stream here, not with pwrite at each offset."""
    check_sparse_map(info, data_end)
    pos = 0
    for offset, length in info.sparse or ():
        if length and offset < pos:
            raise InvalidDocument(f"tar entry {info.name[:200]!r}: sparse segments overlap "
                                  "or are out of order", hint="the layer is broken or hostile")
        pos = offset + length if length else pos


def _zeros(n: int) -> Iterator[bytes]:
    block = bytes(min(n, 1 << 20))
    while n > 0:
        yield block[:n]
        n -= len(block)


# The merged tree -----------------------------------------------------------------
class Node:
    """A visible path of the merged tree: its entry, the layer that last wrote it, and
    (for dirs) its children by name."""

    __slots__ = ("children", "entry", "layer", "source")

    def __init__(self, entry: Entry | None, layer: int) -> None:
        self.entry = entry  # None: a parent dir no layer has an entry for
        self.layer = layer
        self.children: dict[str, Node] | None = {} if entry is None or \
            entry.kind == "dir" else None
        self.source: tuple[int, int] | None = None  # (layer, entry number) with the content


Deleted = Callable[[str, Node, int, bool], None]  # path, node, layer removing it, replaced?


class MergedTree:
    """Layers applied bottom → top as overlayfs shows them: a whiteout deletes the
    path below it, an opaque dir hides every lower child, a non-dir replaces a dir."""

    def __init__(self, on_delete: Deleted | None = None) -> None:
        self.root = Node(Entry("", "dir", 0o755), -1)
        self._on_delete = on_delete

    def apply(self, entry: Entry, layer: int, ordinal: int = 0) -> None:
        """Apply one entry of ``layer`` (the ``ordinal``-th of its tar)."""
        parts = entry.path.split("/") if entry.path else []
        if entry.kind == "whiteout":
            parent = self._lookup_dir(parts[:-1])
            if parent is not None and parent.children is not None:
                old = parent.children.get(parts[-1])
                if old is not None and old.layer < layer:
                    del parent.children[parts[-1]]
                    self._deleted(entry.path, old, layer)
            return
        if entry.kind == "opaque":
            node = self._lookup_dir(parts)
            if node is not None:
                self._hide_lower(entry.path, node, layer)
            return
        if not parts:
            self.root.entry, self.root.layer = entry, layer
            return
        parent = self._make_parents(parts[:-1], layer)
        self._put(parent, parts[-1], entry, layer, ordinal)

    def _put(self, parent: Node, name: str, entry: Entry, layer: int, ordinal: int) -> None:
        assert parent.children is not None
        old = parent.children.get(name)
        if old is not None and old.children is not None and entry.kind == "dir":
            old.entry, old.layer = entry, layer  # a dir over a dir: the children stay
            return
        if old is not None:
            self._deleted(entry.path, old, layer, replaced=True)
        node = Node(entry, layer)
        if entry.kind == "file":
            node.source = (layer, ordinal)
        elif entry.kind == "hardlink":
            target = self.lookup(entry.linkname.split("/")) if entry.linkname else None
            if target is None or target.entry is None or target.entry.kind not in (
                    "file", "hardlink"):
                raise InvalidDocument(f"tar entry {entry.path[:200]!r}: hardlink to "
                                      f"{entry.linkname[:200]!r}, which is not a file here",
                                      hint="the layer is broken or hostile")
            node.source = target.source
            entry.size, entry.digest = target.entry.size, target.entry.digest
        parent.children[name] = node

    def _deleted(self, path: str, node: Node, layer: int, replaced: bool = False) -> None:
        if self._on_delete is not None:
            self._on_delete(path, node, layer, replaced)

    def _hide_lower(self, path: str, node: Node, layer: int) -> None:
        if node.children is None:
            return
        for name, child in list(node.children.items()):
            child_path = f"{path}/{name}" if path else name
            if child.layer < layer:
                del node.children[name]
                self._deleted(child_path, child, layer)
            else:
                self._hide_lower(child_path, child, layer)

    def _make_parents(self, parts: list[str], layer: int) -> Node:
        node = self.root
        for i, name in enumerate(parts):
            assert node.children is not None
            child = node.children.get(name)
            if child is None or child.children is None:
                if child is not None:  # a file in the way: the layer's dir replaces it
                    self._deleted("/".join(parts[:i + 1]), child, layer, replaced=True)
                child = Node(None, layer)
                node.children[name] = child
            node = child
        return node

    def _lookup_dir(self, parts: list[str]) -> Node | None:
        node = self.lookup(parts)
        return node if node is not None and node.children is not None else None

    def lookup(self, parts: list[str]) -> Node | None:
        """The node at ``parts`` without following symlinks."""
        node = self.root
        for name in parts:
            if node.children is None:
                return None
            nxt = node.children.get(name)
            if nxt is None:
                return None
            node = nxt
        return node

    def resolve(self, path: str, follow_last: bool = True) -> tuple[str, Node]:
        """``path`` resolved inside the image: symlinks followed within it (an absolute
        target restarts at the image's root, ``..`` stops at the root), at most
        MAX_SYMLINKS of them (a loop is an error, never a hang)."""
        todo = [p for p in path.split("/") if p not in ("", ".")]
        todo.reverse()
        done: list[str] = []
        node = self.root
        links = 0
        while todo:
            name = todo.pop()
            if name == "..":
                done = done[:-1]
                node = self.lookup(done) or self.root
                continue
            if node.children is None or name not in node.children:
                raise FileNotFoundError(2, "no such file or directory in the image",
                                        "/" + "/".join([*done, name]))
            child = node.children[name]
            e = child.entry
            if e is not None and e.kind == "symlink" and (todo or follow_last):
                links += 1
                if links > paths.MAX_SYMLINKS:
                    raise OSError(40, "too many levels of symbolic links in the image",
                                  "/" + "/".join([*done, name]))
                target = [p for p in e.linkname.split("/") if p not in ("", ".")]
                todo.extend(reversed(target))
                if e.linkname.startswith("/"):
                    done, node = [], self.root
                continue
            done.append(name)
            node = child
        return "/".join(done), node

    def walk(self, node: Node | None = None, prefix: str = "") -> Iterator[tuple[str, Node]]:
        """Every node below ``node`` in path order, iteratively (deep trees)."""
        start = node or self.root
        stack: list[tuple[str, Node]] = [(prefix, start)]
        while stack:
            path, n = stack.pop()
            yield path, n
            if n.children:
                for name in sorted(n.children, reverse=True):
                    stack.append((f"{path}/{name}" if path else name, n.children[name]))


def subtree_size(node: Node) -> int:
    """Bytes of the files at and below ``node`` (dive's size of a deleted dir)."""
    total = 0
    stack = [node]
    while stack:
        n = stack.pop()
        if n.entry is not None and n.entry.kind == "file":
            total += n.entry.size
        if n.children:
            stack.extend(n.children.values())
    return total


# Whole images ----------------------------------------------------------------------
OnEntry = Callable[[int, Entry], None]


def layer_entries(image: OpenedImage, index: int, hash_data: bool = False
                  ) -> Iterator[tuple[Entry, LayerReader]]:
    """The entries of layer ``index`` (bottom = 0), streamed from its blob."""
    desc = image.manifest.layers[index]
    with image.open_blob(desc) as blob:
        reader = LayerReader(blob, desc.media_type, f"layer {index} ({desc.digest.short})")
        for entry in reader.entries():
            if hash_data and entry.kind == "file":
                entry.digest = reader.digest()
            yield entry, reader


def merged_tree(image: OpenedImage, *, hash_data: bool = False,
                on_delete: Deleted | None = None, on_entry: OnEntry | None = None
                ) -> MergedTree:
    """All layers merged, bottom → top; callbacks see each entry and each deletion."""
    tree = MergedTree(on_delete)
    for i in range(len(image.manifest.layers)):
        for n, (entry, _reader) in enumerate(layer_entries(image, i, hash_data)):
            if on_entry is not None:
                on_entry(i, entry)
            tree.apply(entry, i, n)
    return tree


def find_layer(image: OpenedImage, text: str) -> int:
    """``--layer N`` (0 = the bottom layer; negative counts from the top) or a digest
    (prefix) of a layer blob or of its diff ID."""
    layers = image.manifest.layers
    if text.lstrip("-").isdigit():
        n = int(text)
        if -len(layers) <= n < len(layers):
            return n % len(layers)
        raise InvalidArgument(f"layer {text}: the image has {len(layers)} layers (0-"
                              f"{len(layers) - 1})")
    want = text.removeprefix("sha256:")
    digests = [(i, d.digest.hex) for i, d in enumerate(layers)]
    digests += [(i, d.hex) for i, d in enumerate(image.config.diff_ids)]
    found = {i for i, h in digests if len(want) >= 6 and h.startswith(want)}
    if len(found) == 1:
        return found.pop()
    raise InvalidArgument(f"layer {text}: {'ambiguous' if found else 'no such'} layer digest",
                          hint="give a layer number or more digits of its digest")


def cat_file(image: OpenedImage, path: str, out: BinaryIO) -> None:
    """Write the content of ``path`` in the merged image to ``out``: symlinks and
    hardlinks resolved inside the image, never on the host."""
    tree = merged_tree(image)
    resolved, node = tree.resolve(path)
    entry = node.entry
    if node.children is not None:
        raise IsADirectoryError(21, "is a directory in the image", "/" + resolved)
    if entry is None or node.source is None:
        kind = entry.kind if entry else "?"
        raise InvalidArgument(f"/{resolved}: a {kind} in the image, not a regular file")
    layer, ordinal = node.source
    # A registry could serve other bytes the second time: the file is held until the
    # whole blob has been read and its digest checked, only then written.
    remote = image.remote is not None
    with tempfile.SpooledTemporaryFile(8 << 20) as spool:
        found = False
        for n, (_entry, reader) in enumerate(layer_entries(image, layer)):
            if n == ordinal:
                found = True
                for piece in reader.pieces():
                    (spool if remote else out).write(piece)
                if not remote:
                    return
        if not found:
            raise InvalidDocument(f"layer {layer}: entry {ordinal} vanished on a second read")
        spool.seek(0)
        shutil.copyfileobj(spool, out, 1 << 20)

"""The build context: a directory, or a tar from stdin unpacked into a work dir.

Everything a build reads from the context goes through this object, and nothing it
hands out leads outside the context root:

* ``..`` that climbs above the root and symlinks whose target is absolute or climbs
  above the root are refused (ContextEscape), never clamped: ``COPY ../x`` and a
  ``link -> /etc/shadow`` are user errors worth one clear line (issue 10, "Errors");
* paths the ignore file excludes are not there for COPY/ADD (ContextNotFound), while
  the Containerfile and the ignore file stay readable by the builder (``read_file``;
  moby#13874);
* only regular files are ever opened for their content: a FIFO or a device node (a
  context tar may carry one) is hashed by its numbers, never read;
* a ``.wh.*`` name is refused where a walk meets it: a layer would read it as a whiteout
  (Docker turned ``ADD .wh.foo`` into a deletion; imagebuilder#75).

A context tar is unpacked by the layer applier (``ociimg.layers.apply``), so the
hostile-tar rules of image layers hold: no entry, symlink or hardlink writes outside
the work dir, and entry counts and sizes are bounded.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
import stat
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import BinaryIO

from ociimg.build.ignore import IgnoreRules, clean_path
from ociimg.errors import BuildError, ContextEscape, ContextNotFound
from ociimg.expand import fullmatch_regex
from ociimg.fsutil import remove_tree

__all__ = ["BuildContext", "load_ignore_rules", "IGNORE_FILES", "MAX_READ_BYTES"]

IGNORE_FILES = (".containerignore", ".dockerignore")
MAX_READ_BYTES = 16 << 20  # a Containerfile or ignore file larger than this is refused
_MAX_SYMLINKS = 40
_GLOB_MAGIC = re.compile(r"[*?\[\\]")


class BuildContext:
    def __init__(self, root: Path, ignore: IgnoreRules) -> None:
        self.root = root
        self.ignore = ignore

    @classmethod
    def from_dir(cls, path: Path, ignore: IgnoreRules) -> BuildContext:
        if not path.is_dir():
            raise ContextNotFound(f"build context {str(path)!r} is not a directory")
        return cls(path.resolve(), ignore)

    @classmethod
    def from_tar(cls, stream: BinaryIO, workdir: Path, ignore: IgnoreRules | None = None, *,
                 max_entries: int = 1_000_000, max_bytes: int | None = None) -> BuildContext:
        """Unpack a context tar (any compression) into the new dir ``workdir``.

        Without ``ignore``, the rules come from the tar's own .containerignore or
        .dockerignore, as Docker reads them from the uploaded context.
        """
        # Here, not at import: a directory context (every cached rebuild) never needs the
        # applier, the archive readers or their imports (~20 ms of `ociimg build`).
        from ociimg.build.fetch import open_archive
        from ociimg.layers.apply import ApplyOptions, apply_layer
        workdir.mkdir(mode=0o700)
        options = ApplyOptions(max_entries=max_entries, max_file_bytes=max_bytes)
        try:
            apply_layer(workdir, open_archive(stream), options)
        except BaseException:
            remove_tree(workdir)
            raise
        context = cls(workdir.resolve(), IgnoreRules([]))
        context.ignore = ignore if ignore is not None else load_ignore_rules(context)
        return context

    # -- paths -------------------------------------------------------------------------

    def resolve(self, relpath: str) -> Path:
        """The host path of a context path, symlinks followed inside the context only."""
        rel = self._follow(relpath)
        if rel != "." and self.ignore.excluded(rel):
            raise ContextNotFound(f"{relpath}: excluded from the build context by the ignore file")
        return self.root / rel if rel != "." else self.root

    def read_file(self, relpath: str) -> bytes:
        """A regular file's bytes even if the ignore file excludes it (the Containerfile)."""
        host = self.root / self._follow(relpath)
        try:
            fd = _open_regular(host, self.root)
        except FileNotFoundError:
            raise ContextNotFound(f"{relpath}: not found in the build context") from None
        except _NotRegular:
            raise BuildError(f"{relpath}: not a regular file") from None
        with os.fdopen(fd, "rb") as f:
            if os.fstat(f.fileno()).st_size > MAX_READ_BYTES:
                raise BuildError(f"{relpath}: larger than {MAX_READ_BYTES} bytes")
            return f.read(MAX_READ_BYTES + 1)[:MAX_READ_BYTES]

    def excluded(self, relpath: str) -> bool:
        return self.ignore.excluded(relpath)

    def _follow(self, relpath: str) -> str:
        """Normalised context-relative path with every symlink resolved inside the root."""
        pending = _components(relpath, relpath)
        done: list[str] = []
        links = 0
        while pending:
            name = pending.pop(0)
            if name == "..":
                if not done:
                    raise ContextEscape(f"{relpath}: leads outside the build context",
                                        hint="COPY and ADD can only read files inside the context")
                done.pop()
                continue
            host = os.path.join(self.root, *done, name)
            try:
                st = os.lstat(host)
            except FileNotFoundError:
                raise ContextNotFound(f"{relpath}: not found in the build context") from None
            except NotADirectoryError:
                raise ContextNotFound(f"{relpath}: not found in the build context "
                                      f"({'/'.join(done)} is not a directory)") from None
            if not stat.S_ISLNK(st.st_mode):
                done.append(name)
                continue
            links += 1
            if links > _MAX_SYMLINKS:
                raise BuildError(f"{relpath}: too many levels of symbolic links")
            target = os.readlink(host)
            if target.startswith("/"):
                raise ContextEscape(f"{relpath}: symlink {'/'.join([*done, name])} -> {target} "
                                    "leads outside the build context",
                                    hint="make the link relative and keep it inside the context")
            pending[:0] = _components(target, relpath)
        return "/".join(done) or "."

    # -- matching ----------------------------------------------------------------------

    def glob(self, pattern: str) -> list[str]:
        """Context paths matching a COPY/ADD source: Go ``filepath.Match`` per component
        (``*`` ``?`` ``[a-z]`` ``[^a]`` ``\\`` escapes) and ``**`` for any depth.

        Excluded paths never match. A wildcard does not descend through a symlinked dir
        (so a link out of the context is never listed); a literal component is followed
        inside the context like ``resolve``.
        """
        cleaned = clean_path(pattern.lstrip("/"))
        if cleaned == ".." or cleaned.startswith("../"):
            raise ContextEscape(f"{pattern}: leads outside the build context",
                                hint="COPY and ADD can only read files inside the context")
        return sorted(set(self._glob_from(".", _components(cleaned, pattern))))

    def _glob_from(self, base: str, parts: list[str]) -> Iterator[str]:
        if not parts:
            if base == "." or self._present(base):
                yield base
            return
        head, rest = parts[0], parts[1:]
        if not _GLOB_MAGIC.search(head):
            path = head if base == "." else f"{base}/{head}"
            try:
                real = self._follow(path)
            except ContextNotFound:
                return
            if rest and not os.path.isdir(os.path.join(self.root, real)):
                return
            # Matches keep the name as written (COPY link/ copies under "link"); the
            # check above made sure the host path below ``path`` stays inside.
            yield from self._glob_from(path, rest)
            return
        if head == "**":
            yield from self._glob_from(base, rest)
        regex = None if head == "**" else _component_regex(head)
        for name, is_dir in self._list(base):
            path = name if base == "." else f"{base}/{name}"
            if regex is None:
                if is_dir and self._may_enter(path):
                    yield from self._glob_from(path, parts)
                elif not is_dir and not rest and self._present(path):
                    yield path
            elif regex.fullmatch(name) and (not rest or is_dir):
                yield from self._glob_from(path, rest)

    def _list(self, base: str) -> list[tuple[str, bool]]:
        try:
            entries = list(os.scandir(self.root / base if base != "." else self.root))
        except (FileNotFoundError, NotADirectoryError):
            return []
        return sorted((e.name, e.is_dir(follow_symlinks=False)) for e in entries)

    def _present(self, rel: str) -> bool:
        if not self.ignore.excluded(rel):
            return True
        return os.path.isdir(self.root / rel) and self._may_enter(rel)

    def _may_enter(self, rel: str) -> bool:
        return not self.ignore.excluded(rel) or self.ignore.may_contain_included(rel)

    def walk(self, relpath: str) -> Iterator[tuple[str, os.stat_result]]:
        """(context path, lstat) of ``relpath`` (symlinks in it followed inside the context)
        and of every entry under it the ignore file keeps; names sorted, a dir before its
        contents, a dir the ignore file excludes only as the parent of a kept entry."""
        rel = self._follow(relpath)
        host = self.root / rel if rel != "." else self.root
        st = os.lstat(host)
        if rel != "." and not self._present(rel):
            raise ContextNotFound(f"{relpath}: excluded from the build context by the ignore file")
        _check_name(rel)
        yield rel, st
        if stat.S_ISDIR(st.st_mode):
            yield from self._walk_dir(rel, host, [])

    def _walk_dir(self, rel: str, host: Path, pending: list[tuple[str, os.stat_result]]
                  ) -> Iterator[tuple[str, os.stat_result]]:
        for name in sorted(os.listdir(host)):
            path = name if rel == "." else f"{rel}/{name}"
            st = os.lstat(host / name)
            keep = not self.ignore.excluded(path)
            if keep:
                _check_name(path)
                yield from pending
                pending.clear()
                yield path, st
            if stat.S_ISDIR(st.st_mode) and (keep or self.ignore.may_contain_included(path)):
                # An excluded dir is yielded only before the first kept entry under it.
                mark = len(pending)
                if not keep:
                    pending.append((path, st))
                yield from self._walk_dir(path, host / name, pending)
                del pending[mark:]

    # -- cache ---------------------------------------------------------------------------

    def digest(self, relpaths: Iterable[str]) -> str:
        """sha256 over what COPY/ADD would read: each source's path, and for every entry
        under it its relative name, type, permission bits, size and content (files),
        target (symlinks) or device numbers. Not mtimes, owners or the context's host
        path, so a touched file or a moved context keeps the step cache (buildah#2215)."""
        h = hashlib.sha256()
        for relpath in relpaths:
            h.update(b"source\0" + relpath.encode("utf-8", "surrogateescape") + b"\0")
            for rel, st in self.walk(relpath):
                h.update(self._record(rel, st))
        return "sha256:" + h.hexdigest()

    def _record(self, rel: str, st: os.stat_result) -> bytes:
        mode = stat.S_IMODE(st.st_mode)
        kind = stat.S_IFMT(st.st_mode)
        head = f"{rel}\0{kind:o}\0{mode:o}\0".encode("utf-8", "surrogateescape")
        host = self.root / rel if rel != "." else self.root
        if stat.S_ISREG(st.st_mode):
            return head + f"{st.st_size}\0".encode() + _file_sha256(host).encode() + b"\n"
        if stat.S_ISLNK(st.st_mode):
            return head + os.readlink(host).encode("utf-8", "surrogateescape") + b"\n"
        if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode):
            return head + f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}\n".encode()
        return head + b"\n"


def _check_name(rel: str) -> None:
    """A ``.wh.`` name would turn into a deletion in the layer (anchors-next trap 16)."""
    if rel.rsplit("/", 1)[-1].startswith(".wh."):
        raise BuildError(f"{rel}: a name starting with .wh. cannot be stored in an image layer "
                         "(it marks a deletion)", hint="rename it or list it in .containerignore")


def _components(path: str, what: str) -> list[str]:
    if "\0" in path:
        raise BuildError(f"{what!r}: path contains a NUL byte")
    return [p for p in path.split("/") if p not in ("", ".")]


class _NotRegular(Exception):
    pass


def _open_regular(host: Path, root: Path | None = None) -> int:
    """Open a file for reading only if it is a regular file: an O_PATH fd is checked
    first, so a FIFO or device node is never opened (a device's open can have effects).
    With ``root``: ``host`` is resolved inside it (a parent swapped for a link to the
    host since the check cannot lead out: the Containerfile's text shows in errors)."""
    if root is None:
        path_fd = os.open(host, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    else:
        from ociimg.oskit.paths import resolve_in_dir
        path_fd = resolve_in_dir(root, str(host.relative_to(root)), follow_last=False)
    try:
        if not stat.S_ISREG(os.fstat(path_fd).st_mode):
            raise _NotRegular(str(host))
        return os.open(f"/proc/self/fd/{path_fd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(path_fd)


def _file_sha256(host: Path) -> str:
    h = hashlib.sha256()
    try:
        fd = _open_regular(host)
    except _NotRegular:
        raise OSError(errno.EINVAL, "replaced by a non-regular file while hashing",
                      str(host)) from None
    with os.fdopen(fd, "rb", buffering=0) as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def _component_regex(pattern: str) -> re.Pattern[str]:
    """Go ``filepath.Match`` for one path component, as a regex."""
    out: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        i += 1
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "\\":
            if i == len(pattern):
                raise BuildError(f"bad pattern {pattern!r}: trailing backslash")
            out.append(re.escape(pattern[i]))
            i += 1
        elif ch == "[":
            end, body = _char_class(pattern, i)
            out.append(body)
            i = end
        else:
            out.append(re.escape(ch))
    return re.compile(fullmatch_regex(out, "[^/]*"), re.DOTALL)  # COPY *a*a*a*...: bounded


def _char_class(pattern: str, i: int) -> tuple[int, str]:
    """``[...]`` starting after ``[``: (index after ``]``, regex class)."""
    out = ["["]
    if pattern[i:i + 1] == "^":
        out.append("^")
        i += 1
    first = True
    while i < len(pattern):
        ch = pattern[i]
        if ch == "]" and not first:
            out.append("]")
            return i + 1, "".join(out)
        if ch == "\\":
            i += 1
            if i == len(pattern):
                break
            ch = pattern[i]
        out.append("\\" + ch if ch in "\\]^[-" and not (ch == "-" and not first) else ch)
        first = False
        i += 1
    raise BuildError(f"bad pattern {pattern!r}: unterminated character class")


def load_ignore_rules(context: BuildContext, containerfile: str | None = None) -> IgnoreRules:
    """The ignore rules for a build: ``<Containerfile>.containerignore`` (or
    ``.dockerignore``) beside the Containerfile wins (BuildKit
    ``testDockerignoreOverride``), else the context's .containerignore, else its
    .dockerignore; none at all means nothing is excluded."""
    candidates = [f"{containerfile}{suffix}" for suffix in IGNORE_FILES] if containerfile else []
    for name in [*candidates, *IGNORE_FILES]:
        try:
            text = context.read_file(name)
        except ContextNotFound:
            continue
        return IgnoreRules.parse(text.decode("utf-8", "surrogateescape"), name)
    return IgnoreRules([])

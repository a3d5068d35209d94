"""``ociimg build``: what the CLI and the library share around the builder.

Finds and reads the Containerfile (``-f FILE``, ``-f -`` from stdin, else
``Containerfile`` then ``Dockerfile`` in the context), opens the context (a directory
with its ``.containerignore``/``.dockerignore``, or ``-``: a tar on stdin, unpacked in a
temp dir removed afterwards), gives the builder a resolver for base images (the store,
an ``oci:`` layout, or a registry pull), and writes ``--output type=oci-archive``.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from ociimg.build.builder import BuildOptions, BuildResult, build
from ociimg.errors import BuildError, InvalidArgument, NotFound
from ociimg.events import NullProgress, Progress
from ociimg.fsutil import remove_tree
from ociimg.reference import LAYOUT_KINDS, parse_image_name
from ociimg.spec import Platform

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.build.context import BuildContext
    from ociimg.containers.resolved import ResolvedImage

DEFAULT_FILES = ("Containerfile", "Dockerfile", "dockerfile")
MAX_CONTAINERFILE = 4 << 20


@dataclass(frozen=True)
class BuildRequest:
    context: str                      # a directory, or "-" for a tar on stdin
    file: str | None = None           # -f: a path, "-" for stdin, None: the default names
    output: str | None = None         # --output type=oci-archive,dest=FILE
    verifier: Any = None              # --policy: FROM images are judged as pull/run's are


def build_image(root: Path, request: BuildRequest, options: BuildOptions, *,
                stdin: BinaryIO | None = None, progress: Progress | None = None
                ) -> BuildResult:
    from ociimg.build.dockerfile import parse
    progress = progress or NullProgress()
    if request.context == "-" and request.file == "-":
        raise InvalidArgument("build: the context and the Containerfile cannot both come "
                              "from stdin", hint="give one of them as a path")
    with _context(root, request, stdin) as (context, context_dir):
        name, text = _containerfile(request, context, context_dir, stdin)
        df = parse(text, name)
        resolve = _resolver(root, progress, request.verifier)
        result = build(root, df, context, options, resolve, progress)
    if request.output:
        write_output(root, result, request.output)
    return result


@contextlib.contextmanager
def _context(root: Path, request: BuildRequest, stdin: BinaryIO | None
             ) -> Iterator[tuple[BuildContext, Path | None]]:
    from ociimg.build.context import BuildContext, load_ignore_rules
    from ociimg.build.ignore import IgnoreRules
    if request.context == "-":
        if stdin is None:
            raise InvalidArgument("build -: no tar on stdin")
        base = root / "build-cache"
        base.mkdir(parents=True, exist_ok=True, mode=0o700)
        work = Path(tempfile.mkdtemp(dir=base, prefix=".context-"))
        try:
            yield BuildContext.from_tar(stdin, work / "context"), None
        finally:
            remove_tree(work)
        return
    path = Path(request.context)
    if not path.is_dir():
        raise NotFound(f"build context {request.context}: not a directory",
                       hint="give the directory holding the files COPY reads (or -)")
    context = BuildContext.from_dir(path, IgnoreRules([]))
    context.ignore = load_ignore_rules(context, _in_context(path, request.file))
    yield context, path


def _in_context(context_dir: Path, file: str | None) -> str | None:
    """The Containerfile's context-relative name (its own ignore file is looked up
    beside it), or None when it is elsewhere."""
    if file is None:
        return next((n for n in DEFAULT_FILES if (context_dir / n).is_file()), None)
    if file == "-":
        return None
    try:
        return str(Path(file).absolute().relative_to(context_dir.absolute()))
    except ValueError:
        return None


def _containerfile(request: BuildRequest, context: BuildContext, context_dir: Path | None,
                   stdin: BinaryIO | None) -> tuple[str, str]:
    if request.file == "-":
        if stdin is None:
            raise InvalidArgument("build -f -: nothing on stdin")
        return "Containerfile", _decode(stdin.read(MAX_CONTAINERFILE + 1), "stdin")
    if request.file is not None:
        path = Path(request.file)
        if not path.is_file():
            raise NotFound(f"Cannot locate specified Dockerfile: {request.file}")
        return path.name, _decode(path.read_bytes()[:MAX_CONTAINERFILE + 1], request.file)
    for name in DEFAULT_FILES:
        with contextlib.suppress(OSError, BuildError, NotFound):
            return name, _decode(context.read_file(name), name)
    raise NotFound("Cannot locate specified Dockerfile: Containerfile",
                   hint="the context has neither Containerfile nor Dockerfile; use -f FILE")


def _decode(data: bytes, where: str) -> str:
    if len(data) > MAX_CONTAINERFILE:
        raise InvalidArgument(f"{where}: Containerfile larger than {MAX_CONTAINERFILE} bytes")
    return data.decode("utf-8", "surrogateescape")


LAYOUT_PREFIXES = tuple(f"{kind}:" for kind in LAYOUT_KINDS)


def _resolver(root: Path, progress: Progress, verifier: Any = None):  # type: ignore[no-untyped-def]
    """FROM's image: pulled when asked or missing; with a ``verifier`` (--policy) a pull
    is judged before it is tagged and a stored image before it is used (as run's)."""
    def resolve(text: str, platform: Platform | None, pull: bool) -> ResolvedImage:
        from ociimg.commands.resolve import resolve_image
        from ociimg.registry import PullOptions
        options = PullOptions(platform=platform or Platform.host(), verifier=verifier)
        if verifier is not None and text.startswith(LAYOUT_PREFIXES):
            verifier.precheck(parse_image_name(text))  # a layout or archive: judged whole
        if pull and not text.startswith(LAYOUT_PREFIXES):
            from ociimg.reference import parse_reference
            from ociimg.registry import pull as pull_image
            from ociimg.store import Store
            pull_image(parse_reference(text), Store.open(root), options, progress)
        resolved = resolve_image(text, root, platform=platform, pull_options=options,
                                 progress=progress)
        if verifier is not None:
            from ociimg.signing.images import policy_name
            verifier(policy_name(text, resolved.name), resolved.descriptor, None)
        return resolved
    return resolve


def parse_output(text: str) -> Path:
    """``type=oci-archive,dest=FILE`` → FILE (the one output type ociimg writes)."""
    fields = dict(part.partition("=")[::2] for part in text.split(",") if part)
    if fields.get("type") != "oci-archive" or not fields.get("dest"):
        raise InvalidArgument(f"--output {text}: not supported",
                              hint="use --output type=oci-archive,dest=FILE")
    return Path(fields["dest"])


def write_output(root: Path, result: BuildResult, text: str) -> None:
    from ociimg.registry.copy import copy_between_stores, write_layout_archive
    from ociimg.store import Store
    dest = parse_output(text)
    store = Store.open(root)
    work = Path(tempfile.mkdtemp(dir=dest.parent.absolute(), prefix=f".{dest.name}."))
    try:
        layout = Store(work / "layout")
        layout.init()
        copy_between_stores(store, layout, result.descriptor)
        layout.tag(_archive_name(result), result.descriptor)
        write_layout_archive(work / "layout", dest)
    finally:
        remove_tree(work)
    os.chmod(dest, 0o644)


def _archive_name(result: BuildResult) -> str:
    if result.tags:
        return result.tags[0].rpartition(":")[2] if ":" in result.tags[0].rsplit("/", 1)[-1] \
            else "latest"
    return "latest"

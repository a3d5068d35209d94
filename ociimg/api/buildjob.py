"""One ``POST /build``, run as a child process of ``ociimg serve``:
``python -m ociimg.api.buildjob JOB.json``.

The server spools the context tar and hands it over here; this process unpacks it,
builds, and writes the legacy builder's JSON lines on stdout (what the docker CLI and
docker-py render). A build in its own process is cancelled the way ``ociimg build`` is on
Ctrl-C: the server sends SIGINT when the client goes away, and the builder's own
cleanup removes every step container, snapshot and mount, tagging nothing. It also keeps
a build's RUN containers on the fast single-threaded start path.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

from ociimg.reference import familiar_name

# A whole JSON object per write; RUN output longer than this is cut into several.
MAX_STREAM_CHUNK = 64 << 10
DOCKERFILE_NAMES = ("Dockerfile", "dockerfile", "Containerfile")
BLOCK = 512
# Tar entry types whose header is all there is (their size field is not data): Go's
# archive/tar isHeaderOnlyType.
HEADER_ONLY = frozenset(b"123456")


class _Stream:
    """Where the JSON lines go: the server's pipe on a private fd. fd 1 itself is
    /dev/null, so no process the build starts (runtime, monitor) can put a stray byte
    into the stream or die of a pipe the server closed."""

    fd: int | None = None

    @classmethod
    def take_stdout(cls) -> None:
        cls.fd = os.dup(1)  # not inherited (Python's fds are O_CLOEXEC)
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)


def emit(doc: dict[str, Any]) -> None:
    data = json.dumps(doc, separators=(",", ":")).encode() + b"\n"
    if _Stream.fd is None:
        return
    try:
        while data:
            data = data[os.write(_Stream.fd, data):]
    except OSError:  # the server is gone: its SIGINT (pdeathsig) ends the build
        _Stream.fd = None


def emit_stream(text: str) -> None:
    for at in range(0, len(text), MAX_STREAM_CHUNK):
        emit({"stream": text[at:at + MAX_STREAM_CHUNK]})


def emit_error(message: str, code: int | None = None) -> None:
    detail: dict[str, Any] = {"message": message}
    if code:
        detail["code"] = code
    emit({"errorDetail": detail, "error": message})


class LegacyProgress:
    """The builder's progress as the legacy builder's stream: "Step N/M : TEXT", the
    step's output, " ---> Using cache"; base-image pulls as status lines. Quiet: nothing."""

    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def start(self, key: str, description: str, total: int | None) -> None:
        if self.quiet:
            return
        if key.startswith("step-"):
            head, _, text = description.partition(": ")
            emit_stream(f"{head.replace('STEP', 'Step', 1)} : {text}\n")
        elif not description.startswith("unpacking"):
            emit({"status": description})

    def advance(self, key: str, amount: int) -> None:
        pass

    def done(self, key: str, message: str | None = None) -> None:
        if not self.quiet and key.startswith("step-") and message == "cached":
            emit_stream(" ---> Using cache\n")

    def log(self, message: str) -> None:
        if not self.quiet:
            emit_stream(message + "\n")


class Terminated(io.RawIOBase):
    """A tar stream that may end without its two zero blocks, completed.

    docker's CLI sends such a tar when ``-f`` names a Dockerfile outside the context
    (``archive.ReplaceFileTarWrapper`` closes its pipe before the tar writer), and Go's
    reader takes an end of data where a header would start as the archive's end (the
    last entry's padding is missing too). So do we: when every byte the last header
    declared has come (not inside an entry's data: truncation stays an error), the
    padding and the end blocks are supplied.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.offset = 0
        self.next_header = 0     # where the next header block starts
        self.data_end = 0        # where the last entry's data (unpadded) ends
        self.header = b""        # its bytes read so far
        self.ended = False       # a zero block was seen: the rest is not parsed
        self.tail = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.tail:
            n = min(len(buffer), len(self.tail))
            buffer[:n], self.tail = self.tail[:n], self.tail[n:]
            return n
        data = self.inner.read(len(buffer))
        if not data:
            if not self.ended and self.data_end <= self.offset <= self.next_header \
                    and not self.header:
                self.ended = True
                self.tail = bytes(self.next_header - self.offset + 2 * BLOCK)
                return self.readinto(buffer)
            return 0
        self._track(data)
        buffer[:len(data)] = data
        return len(data)

    def _track(self, data: bytes) -> None:
        start, self.offset = self.offset, self.offset + len(data)
        while not self.ended and self.next_header < self.offset:
            at = max(self.next_header, start) - start
            need = BLOCK - len(self.header)
            self.header += data[at:at + need]
            if len(self.header) < BLOCK:
                return
            block, self.header = self.header, b""
            if block == bytes(BLOCK):
                self.ended = True
                return
            size = _data_size(block)
            self.data_end = self.next_header + BLOCK + size
            self.next_header += BLOCK + -(-size // BLOCK) * BLOCK


def _data_size(block: bytes) -> int:
    """The size of the data after a tar header (octal or base-256 size field)."""
    if block[156] in HEADER_ONLY:
        return 0
    field = block[124:136]
    if field[0] & 0x80:
        size = int.from_bytes(field[1:], "big")
    else:
        text = field.split(b"\0", 1)[0].strip() or b"0"
        try:
            size = int(text, 8)
        except ValueError:
            size = 0  # a bad header: the applier refuses it with its own error
    return size


def run(job: dict[str, Any]) -> None:
    from ociimg.build.builder import BuildOptions, build
    from ociimg.build.context import BuildContext, load_ignore_rules
    from ociimg.build.dockerfile import parse
    from ociimg.commands.building import _resolver
    from ociimg.spec import Platform

    root, work = Path(job["root"]), Path(job["work"])
    from ociimg.build.fetch import open_archive
    with open(work / "context.tar", "rb") as raw:
        tar = io.BufferedReader(Terminated(open_archive(raw)), 1 << 20)
        context = BuildContext.from_tar(tar, work / "context", max_bytes=job["max_bytes"])
    name, text = _dockerfile(context, job.get("dockerfile"))
    context.ignore = load_ignore_rules(context, name)
    df = parse(text, name)
    options = BuildOptions(
        tags=list(job["tags"]), build_args=dict(job["buildargs"]), target=job["target"],
        no_cache=job["nocache"], pull=job["pull"], network=job["network"],
        platform=Platform.parse(job["platform"]) if job["platform"] else None,
        squash=job["squash"], labels=dict(job["labels"]))
    progress = LegacyProgress(job["quiet"])
    result = build(root, df, context, options, _resolver(root, progress), progress)
    image_id = str(result.image_id)
    if job["quiet"]:
        emit_stream(image_id + "\n")
        return
    emit({"aux": {"ID": image_id}})
    emit_stream(f" ---> {result.image_id.hex[:12]}\n")
    emit_stream(f"Successfully built {result.image_id.hex[:12]}\n")
    for tag in result.tags:
        emit_stream(f"Successfully tagged {familiar_name(tag)}\n")


def _dockerfile(context: Any, name: str | None) -> tuple[str, str]:
    """The Dockerfile inside the context (never a host path): its name and text."""
    from ociimg.errors import ContextNotFound, NotFound
    for candidate in [name] if name else DOCKERFILE_NAMES:
        try:
            data = context.read_file(candidate)
        except ContextNotFound:
            continue
        return candidate, data.decode("utf-8", "surrogateescape")
    raise NotFound(f"Cannot locate specified Dockerfile: {name or 'Dockerfile'}")


def main(argv: list[str]) -> int:
    import signal

    from ociimg.oskit import linux
    _Stream.take_stdout()
    signal.signal(signal.SIGINT, _interrupted)
    job = json.loads(Path(argv[1]).read_text())
    # A server that dies (even SIGKILLed) cancels its builds as a client that goes away
    # does; then no server is left to remove the work dir, so this process does.
    linux.set_pdeathsig(signal.SIGINT)
    try:
        return _build(job) if os.getppid() == job["server_pid"] else 130
    finally:
        if os.getppid() != job["server_pid"]:
            from ociimg.fsutil import remove_tree
            remove_tree(Path(job["work"]))


def _interrupted(signum: int, frame: Any) -> None:
    """The first SIGINT cancels the build; later ones must not cut its cleanup short (a
    dying multi-threaded server sends its pdeathsig once per thread it reparents us
    through)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt


def _build(job: dict[str, Any]) -> int:
    from ociimg.errors import OciimgError, StepFailed
    try:
        run(job)
    except KeyboardInterrupt:  # the server's SIGINT: the client (or the server) is gone
        return 130
    except OciimgError as exc:
        sys.stderr.write(f"ociimg build (API): {_text(exc)}\n")
        emit_error(_text(exc), exc.exit_code if isinstance(exc, StepFailed) else None)
        return 1
    return 0


def _text(exc: Any) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


if __name__ == "__main__":
    sys.exit(main(sys.argv))

"""The one exception hierarchy of ociimg.

Everything raised on purpose subclasses :class:`OciimgError`. The kinds follow
containerd's errdefs so callers can branch on them; the message names the failure
and its object, the ``hint`` says what to do next. ``cli.main`` prints both as
``ociimg: error: …`` / ``hint: …`` and exits with ``exit_code``.
"""

from __future__ import annotations


class OciimgError(Exception):
    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class InvalidReference(OciimgError):
    """An image reference does not follow the distribution grammar."""


class InvalidDocument(OciimgError):
    """A manifest, index, config or runtime config is malformed or unsupported."""


class AlreadyExists(OciimgError):
    pass


class UnsafeArchive(OciimgError):
    """A layer tries to escape its root or is otherwise hostile."""


class NotFound(OciimgError):
    pass


class ManifestUnknown(NotFound):
    pass


class BlobUnknown(NotFound):
    pass


class ImageNotFound(NotFound):
    pass


class ContainerNotFound(NotFound):
    pass


class IntegrityError(OciimgError):
    pass


class DigestMismatch(IntegrityError):
    pass


class DiffIDMismatch(IntegrityError):
    pass


class RegistryError(OciimgError):
    pass


class Unauthorized(RegistryError):
    pass


class RegistryUnreachable(RegistryError):
    pass


class NoMatchingPlatform(RegistryError):
    pass


class LockTimeout(OciimgError):
    pass


class ContainerError(OciimgError):
    pass


class ExecutableNotFound(ContainerError):
    exit_code = 127


class NotExecutable(ContainerError):
    """The program exists but cannot be run (a directory, no x bit): docker's 126."""

    exit_code = 126


class BuildError(OciimgError):
    pass


class StepFailed(BuildError):
    def __init__(self, message: str, *, exit_code: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.exit_code = exit_code


class BuildSyntaxError(BuildError):
    """A Containerfile (or ignore file) does not parse: names file, line and instruction."""

    def __init__(self, message: str, *, filename: str, line: int, instruction: str | None = None,
                 hint: str | None = None) -> None:
        where = f"{filename}:{line}: {instruction}: " if instruction else f"{filename}:{line}: "
        super().__init__(where + message, hint=hint)
        self.filename = filename
        self.line = line
        self.instruction = instruction


class ContextEscape(BuildError):
    """A build-context path leads out of the context (``..``, a symlink out)."""


class ContextNotFound(BuildError):
    """A path is not in the build context (missing, or excluded by the ignore file)."""


class DownloadFailed(BuildError):
    """ADD of a URL failed (HTTP status, size limit, too many redirects)."""


class InvalidArgument(OciimgError):
    """A command-line value is malformed (e.g. a container name)."""


class SignatureInvalid(IntegrityError):
    """No signature verifies: missing, wrong key, tampered payload, another digest."""


class PolicyDenied(IntegrityError):
    """The signature policy (containers-policy.json) rejects the image."""

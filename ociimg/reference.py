"""Image references: the docker/distribution grammar, normalised as the Docker CLI does.

``busybox`` → ``docker.io/library/busybox:latest``. The first path component is a
registry domain only if it contains ``.`` or ``:`` or is ``localhost``
(containers/image ``docker/reference/normalize.go``); ``docker.io`` and
``index.docker.io`` talk to ``registry-1.docker.io`` and keep their credentials under
``https://index.docker.io/v1/`` in auth files (containers/image ``pkg/docker/config``).

Local images use the transports skopeo understands: ``oci:PATH[:NAME]``,
``oci-archive:FILE[:NAME]``, ``docker-archive:FILE[:NAME]`` and ``dir:PATH``;
``docker://`` prefixes a registry reference (see ociimg.transports).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ociimg.digest import Digest
from ociimg.errors import InvalidDocument, InvalidReference

DOCKER_DOMAIN = "docker.io"
DOCKER_API_HOST = "registry-1.docker.io"
DOCKER_AUTH_KEY = "https://index.docker.io/v1/"
_LEGACY_DOCKER_DOMAINS = frozenset({"docker.io", "index.docker.io"})

# distribution-spec spec.md "Pulling manifests": <name> and <reference> grammar.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN_RE = re.compile(
    rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|\[[a-fA-F0-9:]+\])(?::[0-9]+)?")
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_PATH_COMPONENT_RE = re.compile(_PATH_COMPONENT)
REPOSITORY_RE = re.compile(rf"{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*")  # <name>, no domain
TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_HEX64_RE = re.compile(r"[a-f0-9]{64}")
# image-spec annotations.md: org.opencontainers.image.ref.name grammar.
_REF_NAME_RE = re.compile(
    r"[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*")

NAME_MAX = 255
_OTHER_TRANSPORTS = ("docker-daemon:", "containers-storage:", "ostree:", "sif:")
LayoutKind = Literal["oci", "oci-archive", "docker-archive", "dir"]
LAYOUT_KINDS: tuple[LayoutKind, ...] = ("oci-archive", "oci", "docker-archive", "dir")


@dataclass(frozen=True, slots=True)
class Reference:
    """A registry image reference; ``tag`` and ``digest`` may both be set."""

    domain: str
    path: str
    tag: str | None = None
    digest: Digest | None = None

    @property
    def api_host(self) -> str:
        """host[:port] to send distribution API requests to."""
        return DOCKER_API_HOST if self.domain == DOCKER_DOMAIN else self.domain

    @property
    def auth_key(self) -> str:
        """The key of this registry in docker/containers auth files."""
        return DOCKER_AUTH_KEY if self.domain == DOCKER_DOMAIN else self.domain

    @property
    def name(self) -> str:
        return f"{self.domain}/{self.path}"

    @property
    def repository(self) -> str:
        return self.path

    @property
    def manifest_reference(self) -> str:
        """What goes after /manifests/ in the API: the digest when pinned, else the tag."""
        if self.digest is not None:
            return str(self.digest)
        return self.tag or "latest"

    def with_digest(self, digest: Digest) -> Reference:
        """Pin to ``digest``; the tag, if any, stays for display (distribution WithDigest)."""
        return dataclasses.replace(self, digest=digest)

    def with_tag(self, tag: str) -> Reference:
        """The same repository at tag ``tag`` (an unpinned reference)."""
        _check_tag(tag, tag)
        return dataclasses.replace(self, tag=tag, digest=None)

    def __str__(self) -> str:
        text = self.name
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


@dataclass(frozen=True, slots=True)
class LayoutReference:
    """An image in a local OCI layout directory (``oci:``), an OCI or ``docker save`` tar
    archive (``oci-archive:``, ``docker-archive:``) or skopeo's ``dir:`` directory."""

    kind: LayoutKind
    path: Path
    tag: str | None = None

    def __str__(self) -> str:
        return f"{self.kind}:{self.path}" + (f":{self.tag}" if self.tag else "")


def parse_reference(text: str) -> Reference:
    """Parse and normalise a registry reference; ``latest`` when neither tag nor digest."""
    if not isinstance(text, str) or not text:
        raise InvalidReference("invalid reference: empty", hint="use e.g. busybox:latest")
    if text.startswith("docker://"):
        text = text[len("docker://"):]
    remainder, digest = _split_digest(text)
    remainder, tag = _split_tag(remainder, text)
    domain, path = _split_domain(remainder)
    _check_path(path, text)
    if len(domain) + 1 + len(path) > NAME_MAX:
        raise InvalidReference(f"invalid reference {text[:80]!r}: name longer than {NAME_MAX} "
                               "characters", hint="use a shorter repository name")
    if tag is None and digest is None:
        tag = "latest"
    return Reference(domain, path, tag, digest)


def parse_image_name(text: str) -> Reference | LayoutReference:
    """A reference as the CLI takes it: ``docker://…``, ``oci:PATH[:NAME]``, ``oci-archive:…``,
    ``docker-archive:FILE[:NAME]``, ``dir:PATH`` or a bare registry reference."""
    if text.startswith("dir:"):
        # containers/image dir transport: everything after "dir:" is the path.
        return _parse_layout("dir", text[4:], text, named=False)
    for kind in LAYOUT_KINDS:
        if text.startswith(f"{kind}:"):
            return _parse_layout(kind, text[len(kind) + 1:], text)
    if text.startswith(_OTHER_TRANSPORTS):
        transport = text.split(":", 1)[0]
        raise InvalidReference(f"invalid reference {text[:80]!r}: transport {transport!r} is "
                               "not supported",
                               hint="use docker://, oci:PATH[:NAME], oci-archive:FILE[:NAME], "
                                    "docker-archive:FILE[:NAME] or dir:PATH")
    return parse_reference(text)


def parse_registry_name(text: str, why: str = "expected a registry reference here, not "
                        "a layout", hint: str | None = None) -> Reference:
    """``parse_image_name`` where only a registry will do (push, pull, sign): a layout
    is an error saying ``why``."""
    ref = parse_image_name(text)
    if isinstance(ref, LayoutReference):
        raise InvalidReference(f"{text}: {why}", hint=hint)
    return ref


def familiar_name(name: str | None) -> str:
    """docker's familiar form of a stored name (distribution's FamiliarName):
    docker.io/library/busybox:latest → busybox:latest, docker.io/x/y:1 → x/y:1."""
    if not name:
        return ""
    rest = name.removeprefix("docker.io/library/")
    if rest != name and "/" not in rest.split("@")[0].split(":")[0]:
        return rest
    return name.removeprefix("docker.io/")


def is_valid_ref_name(name: str) -> bool:
    """True if ``name`` may be stored as org.opencontainers.image.ref.name (image-spec)."""
    return isinstance(name, str) and _REF_NAME_RE.fullmatch(name) is not None


def check_ref_name(name: str) -> str:
    if not is_valid_ref_name(name):
        raise InvalidReference(
            f"invalid image name {name[:80]!r}: not allowed as an OCI layout ref name",
            hint="names are components of [A-Za-z0-9] joined by one of - . _ : @ + or --, "
                 "separated by /")
    return name


# Parsing steps -----------------------------------------------------------------
def _split_digest(text: str) -> tuple[str, Digest | None]:
    if "@" not in text:
        return text, None
    remainder, _, digest_text = text.partition("@")
    try:
        digest = Digest.parse(digest_text, where="digest")
    except InvalidDocument as exc:
        raise InvalidReference(f"invalid reference {text[:80]!r}: {digest_text[:80]!r} is not "
                               "a sha256/sha512 digest",
                               hint="digests look like sha256:<64 lowercase hex digits>") from exc
    return remainder, digest


def _split_tag(remainder: str, text: str) -> tuple[str, str | None]:
    colon = remainder.rfind(":")
    if colon < 0 or "/" in remainder[colon:]:
        return remainder, None  # the colon belongs to a registry port
    tag = remainder[colon + 1:]
    _check_tag(tag, text)
    return remainder[:colon], tag


def _check_tag(tag: str, text: str) -> None:
    if not TAG_RE.fullmatch(tag):
        raise InvalidReference(f"invalid reference {text[:80]!r}: bad tag {tag[:140]!r}",
                               hint="a tag is [A-Za-z0-9_] then up to 127 of [A-Za-z0-9_.-]")


def _split_domain(remainder: str) -> tuple[str, str]:
    first, slash, rest = remainder.partition("/")
    if not slash or not (("." in first) or (":" in first) or first == "localhost"):
        domain, path = DOCKER_DOMAIN, remainder
    else:
        if not _DOMAIN_RE.fullmatch(first) or not _valid_host_port(first):
            raise InvalidReference(f"invalid reference {remainder[:80]!r}: bad registry "
                                   f"host {first[:100]!r}", hint="use host[:port]/repository")
        domain, path = first, rest
    if domain in _LEGACY_DOCKER_DOMAINS:
        domain = DOCKER_DOMAIN
        if "/" not in path:
            path = f"library/{path}"
    return domain, path


def _valid_host_port(domain: str) -> bool:
    """What the grammar cannot say: a port is 1-65535, a bracketed host an IPv6 address
    (else every URL built from it fails later, in urllib, as a traceback)."""
    host, port = domain, ""
    if domain.startswith("["):
        host, _, port = domain[1:].partition("]")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return False
        port = port.removeprefix(":")
    elif ":" in domain:
        host, _, port = domain.partition(":")
    return not port or (len(port) <= 5 and 1 <= int(port) <= 65535)


def _check_path(path: str, text: str) -> None:
    if _HEX64_RE.fullmatch(path.removeprefix("library/")):
        # distribution ParseNormalizedNamed: an image ID is not a repository name.
        raise InvalidReference(f"invalid reference {text[:80]!r}: a 64-hex image ID is not a "
                               "repository name", hint="prefix the digest with name@sha256:")
    for component in path.split("/"):
        if _PATH_COMPONENT_RE.fullmatch(component):
            continue
        if _PATH_COMPONENT_RE.fullmatch(component.lower()):
            raise InvalidReference(f"invalid reference {text[:80]!r}: repository name must "
                                   "be lowercase", hint=f"use {text.lower()[:80]!r}")
        raise InvalidReference(
            f"invalid reference {text[:80]!r}: bad repository component {component[:80]!r}",
            hint="components are [a-z0-9] joined by '.', '_', '__' or dashes, separated by '/'")


def _parse_layout(kind: LayoutKind, rest: str, text: str, *, named: bool = True
                  ) -> LayoutReference:
    # containers/image splits PATH and NAME at the first ':' (oci_transport.go), so a
    # NAME may itself hold colons: oci:/tmp/l:docker.io/library/busybox:latest.
    path, sep, tag = rest.partition(":") if named else (rest, "", "")
    if not path:
        raise InvalidReference(f"invalid reference {text[:80]!r}: missing path",
                               hint=f"use {kind}:PATH[:NAME]")
    if sep and not tag:
        raise InvalidReference(f"invalid reference {text[:80]!r}: empty name after ':'",
                               hint=f"use {kind}:PATH[:NAME]")
    if "\0" in path:
        raise InvalidReference(f"invalid reference {text[:80]!r}: NUL in the path")
    if tag:
        check_ref_name(tag)
    return LayoutReference(kind, Path(path), tag or None)

"""Reference grammar and normalisation (distribution-spec spec.md names and tags;
containers/image docker/reference/normalize.go)."""

from __future__ import annotations

from pathlib import Path

import pytest

from ociimg.digest import Digest
from ociimg.errors import InvalidReference
from ociimg.reference import (
    LayoutReference,
    Reference,
    check_ref_name,
    is_valid_ref_name,
    parse_image_name,
    parse_reference,
    parse_registry_name,
)

A = "a" * 64
B = "b" * 64

# text, str(ref), domain, path, tag, digest hex, api_host
VALID = [
    ("busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox",
     "latest", None, "registry-1.docker.io"),
    ("library/busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox",
     "latest", None, "registry-1.docker.io"),
    ("docker.io/busybox", "docker.io/library/busybox:latest", "docker.io", "library/busybox",
     "latest", None, "registry-1.docker.io"),
    ("docker.io/library/busybox:1.36", "docker.io/library/busybox:1.36", "docker.io",
     "library/busybox", "1.36", None, "registry-1.docker.io"),
    ("index.docker.io/busybox", "docker.io/library/busybox:latest", "docker.io",
     "library/busybox", "latest", None, "registry-1.docker.io"),
    ("index.docker.io/foo/bar:v1", "docker.io/foo/bar:v1", "docker.io", "foo/bar", "v1", None,
     "registry-1.docker.io"),
    ("docker://alpine", "docker.io/library/alpine:latest", "docker.io", "library/alpine",
     "latest", None, "registry-1.docker.io"),
    ("user/repo", "docker.io/user/repo:latest", "docker.io", "user/repo", "latest", None,
     "registry-1.docker.io"),
    ("a/b/c/d", "docker.io/a/b/c/d:latest", "docker.io", "a/b/c/d", "latest", None,
     "registry-1.docker.io"),
    ("localhost/x", "localhost/x:latest", "localhost", "x", "latest", None, "localhost"),
    ("localhost:5000/x:tag", "localhost:5000/x:tag", "localhost:5000", "x", "tag", None,
     "localhost:5000"),
    ("127.0.0.1:5000/ns/x", "127.0.0.1:5000/ns/x:latest", "127.0.0.1:5000", "ns/x", "latest",
     None, "127.0.0.1:5000"),
    ("[::1]:5000/x", "[::1]:5000/x:latest", "[::1]:5000", "x", "latest", None, "[::1]:5000"),
    ("[2001:db8::1]/x:v", "[2001:db8::1]/x:v", "[2001:db8::1]", "x", "v", None, "[2001:db8::1]"),
    ("quay.io/coreos/etcd", "quay.io/coreos/etcd:latest", "quay.io", "coreos/etcd", "latest",
     None, "quay.io"),
    ("Registry.Example.com/x", "Registry.Example.com/x:latest", "Registry.Example.com", "x",
     "latest", None, "Registry.Example.com"),
    (f"busybox@sha256:{A}", f"docker.io/library/busybox@sha256:{A}", "docker.io",
     "library/busybox", None, A, "registry-1.docker.io"),
    (f"busybox:1.36@sha256:{A}", f"docker.io/library/busybox:1.36@sha256:{A}", "docker.io",
     "library/busybox", "1.36", A, "registry-1.docker.io"),
    (f"127.0.0.1:5000/x@sha256:{B}", f"127.0.0.1:5000/x@sha256:{B}", "127.0.0.1:5000", "x",
     None, B, "127.0.0.1:5000"),
    ("x/a.b_c__d---e/f-g:T_ag.1-x", "docker.io/x/a.b_c__d---e/f-g:T_ag.1-x", "docker.io",
     "x/a.b_c__d---e/f-g", "T_ag.1-x", None, "registry-1.docker.io"),
    ("x:" + "t" * 128, "docker.io/library/x:" + "t" * 128, "docker.io", "library/x", "t" * 128,
     None, "registry-1.docker.io"),
    ("x:_underscore", "docker.io/library/x:_underscore", "docker.io", "library/x",
     "_underscore", None, "registry-1.docker.io"),
    ("my-host/x", "docker.io/my-host/x:latest", "docker.io", "my-host/x", "latest", None,
     "registry-1.docker.io"),
    ("example.com:443/team/app:2024.01", "example.com:443/team/app:2024.01", "example.com:443",
     "team/app", "2024.01", None, "example.com:443"),
]


@pytest.mark.parametrize("text,full,domain,path,tag,digest_hex,api_host", VALID)
def test_valid_references(text: str, full: str, domain: str, path: str, tag: str | None,
                          digest_hex: str | None, api_host: str) -> None:
    ref = parse_reference(text)
    assert str(ref) == full
    assert (ref.domain, ref.path, ref.tag) == (domain, path, tag)
    assert ref.digest == (Digest("sha256", digest_hex) if digest_hex else None)
    assert ref.api_host == api_host
    assert ref.repository == path
    assert ref.name == f"{domain}/{path}"
    # Normalisation is idempotent: the printed form parses to the same reference.
    assert parse_reference(full) == ref


INVALID = [
    ("", "empty"),
    ("Busybox", "lowercase"),
    ("docker.io/Library/busybox", "lowercase"),
    ("localhost:5000/MyApp:tag", "lowercase"),
    ("busybox:", "bad tag"),
    ("busybox:-tag", "bad tag"),
    ("busybox:.tag", "bad tag"),
    ("busybox:" + "t" * 129, "bad tag"),
    ("busybox:ta/g", "bad registry host"),
    ("x@sha256:abc", "digest"),
    (f"x@sha256:{A.upper()}", "digest"),
    (f"x@md5:{A}", "digest"),
    (f"x@sha256:{A}\n", "digest"),
    (f"x@sha512:{A}", "digest"),
    ("x@", "digest"),
    ("a//b", "bad repository component"),
    ("a/", "bad repository component"),
    ("/a", "bad repository component"),
    ("-a/b", "bad repository component"),
    ("a-/b", "bad repository component"),
    ("a..b/c", "bad registry host"),
    ("x/a..b", "bad repository component"),
    ("x/a.-b", "bad repository component"),
    ("a___b", "bad repository component"),
    ("a b", "bad"),
    ("localhost:5000/", "bad repository component"),
    ("host_name.com/x", "bad registry host"),
    ("-bad.com/x", "bad registry host"),
    ("bad.com:port/x", "bad registry host"),
    ("[zz::1]:5000/x", "bad registry host"),
    (A, "image ID"),
    ("x/" + "a" * 260, "longer than 255"),
    ("example.com/" + "/".join(["abcdefghij"] * 23) + "/x", "longer than 255"),
]


@pytest.mark.parametrize("text,fragment", INVALID)
def test_invalid_references(text: str, fragment: str) -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference(text)
    assert fragment in str(info.value)
    assert info.value.hint  # every refusal says what to do
    assert "\n" not in str(info.value)


def test_name_of_exactly_255_characters_is_accepted() -> None:
    path = "a" * (255 - len("example.com/"))
    assert len(parse_reference(f"example.com/{path}").name) == 255


def test_lowercase_error_suggests_lowercase_form() -> None:
    with pytest.raises(InvalidReference) as info:
        parse_reference("MyOrg/App")
    assert "myorg/app" in (info.value.hint or "")


def test_auth_key_is_the_legacy_index_url_for_docker_hub() -> None:
    assert parse_reference("busybox").auth_key == "https://index.docker.io/v1/"
    assert parse_reference("index.docker.io/x/y").auth_key == "https://index.docker.io/v1/"
    assert parse_reference("quay.io/x/y").auth_key == "quay.io"
    assert parse_reference("localhost:5000/x").auth_key == "localhost:5000"


def test_manifest_reference_prefers_digest() -> None:
    assert parse_reference("busybox:1.36").manifest_reference == "1.36"
    assert parse_reference(f"busybox:1.36@sha256:{A}").manifest_reference == f"sha256:{A}"
    assert parse_reference("busybox").manifest_reference == "latest"


def test_with_digest_keeps_tag_and_with_tag_unpins() -> None:
    ref = parse_reference("127.0.0.1:5000/x:v1")
    pinned = ref.with_digest(Digest("sha256", A))
    assert str(pinned) == f"127.0.0.1:5000/x:v1@sha256:{A}"
    assert str(pinned.with_tag("v2")) == "127.0.0.1:5000/x:v2"
    with pytest.raises(InvalidReference):
        ref.with_tag("bad tag")


def test_reference_is_frozen_and_hashable() -> None:
    ref = parse_reference("busybox")
    with pytest.raises(AttributeError):
        ref.tag = "other"  # type: ignore[misc]
    assert {ref, parse_reference("docker.io/library/busybox:latest")} == {ref}
    assert isinstance(ref, Reference)


LAYOUTS = [
    ("oci:/tmp/layout", "oci", "/tmp/layout", None),
    ("oci:/tmp/layout:busybox", "oci", "/tmp/layout", "busybox"),
    ("oci:rel/dir:v1.0", "oci", "rel/dir", "v1.0"),
    ("oci:/l:docker.io/library/busybox:latest", "oci", "/l", "docker.io/library/busybox:latest"),
    (f"oci:/l:127.0.0.1:5000/x@sha256:{A}", "oci", "/l", f"127.0.0.1:5000/x@sha256:{A}"),
    ("oci-archive:/tmp/img.tar", "oci-archive", "/tmp/img.tar", None),
    ("oci-archive:img.tar:latest", "oci-archive", "img.tar", "latest"),
]


@pytest.mark.parametrize("text,kind,path,tag", LAYOUTS)
def test_layout_names(text: str, kind: str, path: str, tag: str | None) -> None:
    ref = parse_image_name(text)
    assert ref == LayoutReference(kind, Path(path), tag)  # type: ignore[arg-type]
    assert str(ref) == text


@pytest.mark.parametrize("text", [
    "oci:", "oci::tag", "oci:/tmp/l:", "oci:/tmp/l:bad name", "oci:/tmp/l:[::1]:5000/x",
    "oci-archive:", "oci:/tmp/l:-x", "docker-daemon:busybox", "containers-storage:x",
    "docker-archive:", "dir:",
])
def test_invalid_image_names(text: str) -> None:
    with pytest.raises(InvalidReference):
        parse_image_name(text)


def test_image_name_defaults_to_registry_reference() -> None:
    assert parse_image_name("busybox") == parse_reference("busybox")
    assert parse_image_name("docker://localhost:5000/x:1") == parse_reference("localhost:5000/x:1")


def test_registry_name_refuses_every_layout_with_its_reason() -> None:
    assert parse_registry_name("docker://localhost:5000/x:1") == parse_reference(
        "localhost:5000/x:1")
    for text in ("oci:/tmp/l:1", "dir:/tmp/d", "docker-archive:/tmp/a.tar"):
        with pytest.raises(InvalidReference, match="^.*: sign needs a registry$") as caught:
            parse_registry_name(text, "sign needs a registry", hint="give docker://REF")
        assert str(caught.value).startswith(text) and caught.value.hint == "give docker://REF"


@pytest.mark.parametrize("name,ok", [
    ("docker.io/library/busybox:latest", True),
    (f"127.0.0.1:5000/x@sha256:{A}", True),
    ("v1.0", True),
    ("a--b", True),
    ("a+b", True),
    ("", False),
    ("a---b", False),
    ("a b", False),
    ("-a", False),
    ("a/", False),
    ("[::1]:5000/x:latest", False),
])
def test_layout_ref_name_grammar(name: str, ok: bool) -> None:
    assert is_valid_ref_name(name) is ok
    if not ok:
        with pytest.raises(InvalidReference):
            check_ref_name(name)


def test_every_normalised_registry_reference_is_a_valid_layout_name() -> None:
    # The store keys index.json by str(ref), so it must satisfy the image-spec grammar
    # except for what that grammar lacks: IPv6 brackets, "__", runs of three dashes and
    # tags starting with "_", which the distribution grammar allows. Such images cannot be
    # named in an OCI layout (skopeo refuses them too); Store.tag says so.
    for text, *_ in VALID:
        if not any(bad in text for bad in ("[", "__", "---", ":_")):
            assert is_valid_ref_name(str(parse_reference(text))), text


def test_random_input_is_either_refused_cleanly_or_round_trips() -> None:
    import random

    rng = random.Random(20240101)
    alphabet = "abcAB019._-/:@[]+ \n" + "sha256:" + A[:8]
    accepted = 0
    for _ in range(5000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randrange(1, 40)))
        if rng.random() < 0.2:
            text += f"@sha256:{A}"
        try:
            ref = parse_reference(text)
        except InvalidReference as exc:
            assert "\n" not in str(exc)  # one-line messages: input is shown with repr()
            continue
        accepted += 1
        assert parse_reference(str(ref)) == ref
        assert len(ref.name) <= 255 and ref.path == ref.path.lower()
    assert accepted > 50  # the generator does reach valid references


def test_registry_client_checks_tags_and_names_with_this_grammar() -> None:
    from ociimg.registry.client import check_manifest_reference, check_repository
    assert check_manifest_reference("v1.2_x-" + "a" * 120) == "v1.2_x-" + "a" * 120
    for bad in (".x", "-x", "a" * 129, "a/b", "x y", "", "é"):
        with pytest.raises(InvalidReference):
            check_manifest_reference(bad)
    assert check_repository("library/busy_box.x--y") == "library/busy_box.x--y"
    for bad in ("Library/x", "a//b", "a/", "-a", "a_", "a" * 256):
        with pytest.raises(InvalidReference):
            check_repository(bad)

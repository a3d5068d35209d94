"""Signatures travel and are enforced, against a real docker-registry on loopback:
`copy --with-signatures` carries the image's cosign .sig/.att/.sbom tags (verify then
passes at the destination), and `build --policy` judges FROM images as pull and run do."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.integration.test_signing import (  # noqa: F401  (keys, push: fixtures)
    PASSWORD,
    digest_of,
    get_manifest,
    image_names,
    keys,
    push,
    write_policy,
)

pytestmark = pytest.mark.usefixtures("root")


def test_copy_with_signatures_carries_sig_att_and_sbom(keys: Path, push,  # type: ignore[no-untyped-def]  # noqa: F811
                                                       fixture_layout: Path,
                                                       tmp_path: Path) -> None:
    ref = push("busybox", "app")
    host, rest = ref.split("/", 1)
    repo = rest.rsplit(":", 1)[0]
    root = keys / "root"
    ociimg(root, "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    digest = digest_of(get_manifest(ref)[0])
    sbom = f"{digest.replace(':', '-')}.sbom"
    ociimg(root, "copy", f"oci:{fixture_layout}:multilayer", f"docker://{host}/{repo}:{sbom}")
    copy = f"{host}/{repo}-copy:1"

    out = ociimg(root, "copy", "--with-signatures", f"docker://{ref}", f"docker://{copy}").stdout
    sig = f"{digest.replace(':', '-')}.sig"
    assert f"attached: {sig}" in out and f"attached: {sbom}" in out and ".att" not in out
    assert get_manifest(f"{host}/{repo}-copy:{sig}")[0] == get_manifest(f"{ref[:-2]}:{sig}")[0]
    ok = ociimg(root, "verify", "--key", str(keys / "cosign.pub"), copy)
    assert f"1 signature(s) over {digest}" in ok.stdout

    bare = f"{host}/{repo}-bare:1"  # without the flag: the image alone
    ociimg(root, "copy", f"docker://{ref}", f"docker://{bare}")
    assert ociimg(root, "verify", "--key", str(keys / "cosign.pub"), bare,
                  check=False).returncode != 0

    layout = tmp_path / "layout"
    assert_one_line_error(ociimg(root, "copy", "--with-signatures", f"docker://{ref}",
                                 f"oci:{layout}:x", check=False), "not a registry image")
    assert not layout.exists()


def test_copy_with_signatures_of_an_index_carries_every_platform_signature(  # type: ignore[no-untyped-def]
        keys: Path, push) -> None:  # noqa: F811
    ref = push("multiarch", "multi")
    host, rest = ref.split("/", 1)
    repo = rest.rsplit(":", 1)[0]
    root = keys / "root"
    ociimg(root, "sign", "--key", str(keys / "cosign.key"), ref, env=PASSWORD)
    index = json.loads(get_manifest(ref)[0])
    out = ociimg(root, "copy", "--with-signatures", f"docker://{ref}",
                 f"docker://{host}/{repo}-copy:1").stdout
    for desc in index["manifests"]:
        tag = desc["digest"].replace(":", "-") + ".sig"
        assert f"attached: {tag}" in out
        assert get_manifest(f"{host}/{repo}-copy:{tag}")[0] == get_manifest(f"{ref[:-2]}:{tag}")[0]


def test_build_policy_judges_from_images(keys: Path, push, ociroot: Path,  # type: ignore[no-untyped-def]  # noqa: F811
                                         tmp_path: Path, fixture_layout: Path) -> None:
    signed, unsigned = push("busybox", "base"), push("multilayer", "other")
    host = signed.split("/", 1)[0]
    policy = write_policy(tmp_path / "policy.json", host, keys)
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), signed, env=PASSWORD)

    def build(base: str, tag: str) -> object:
        ctx = tmp_path / tag
        ctx.mkdir()
        (ctx / "Containerfile").write_text(f"FROM {base}\nLABEL built=yes\n")
        return ociimg(ociroot, "build", "-q", "--policy", str(policy), "-t", tag, str(ctx),
                      check=False)

    ok = build(signed, "good:1")
    assert ok.returncode == 0, ok.stderr
    refused = build(unsigned, "bad:1")
    assert_one_line_error(refused, "no signature exists")  # type: ignore[arg-type]
    names = image_names(ociroot)
    assert unsigned not in names and not any("bad" in n for n in names)
    # Already in the store (pulled with no policy): judged before the build uses it.
    ociimg(ociroot, "pull", "-q", unsigned)
    assert_one_line_error(build(unsigned, "bad:2"), "no signature exists")  # type: ignore[arg-type]
    # A layout is judged whole: this policy rejects everything but signed registry images.
    assert_one_line_error(build(f"oci:{fixture_layout}:busybox", "bad:3"),  # type: ignore[arg-type]
                          "reject")
    rows = json.loads(ociimg(ociroot, "images", "--json").stdout)
    assert not any("bad" in r["name"] for r in rows)

"""A Containerfile's FROM must not get around the signature policy: `ociimg build` pulled
base images (and used stored ones) without it, so an unsigned image ran its RUN steps
and became the base of a tagged image while `pull` and `run` refused it (buildah
applies policy.json to every pull)."""

from __future__ import annotations

from pathlib import Path

from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.integration.test_build_e2e import assert_clean, write_context
from tests.integration.test_signing import (  # noqa: F401 (fixtures)
    PASSWORD,
    image_names,
    keys,
    push,
    write_policy,
)


def test_build_judges_base_images_by_the_policy(keys: Path, push, ociroot: Path,  # type: ignore[no-untyped-def]  # noqa: F811
                                                tmp_path: Path) -> None:
    signed, unsigned = push("busybox", "signed"), push("busybox-plain", "unsigned")
    policy = write_policy(tmp_path / "policy.json", signed.split("/", 1)[0], keys)
    ociimg(keys / "root", "sign", "--key", str(keys / "cosign.key"), signed, env=PASSWORD)
    for pull in ([], ["--pull"]):
        ctx = write_context(tmp_path / "ctx", f"FROM {unsigned}\nRUN echo ran\n")
        proc = ociimg(ociroot, "build", "-q", *pull, "--policy", str(policy), "-t", "bad",
                      str(ctx), check=False)
        assert_one_line_error(proc, "no signature exists")
        assert image_names(ociroot) == []
    # Present in the store (pulled without the policy): judged all the same.
    ociimg(ociroot, "pull", "-q", unsigned)
    proc = ociimg(ociroot, "build", "-q", "--policy", str(policy), "-t", "bad", str(ctx),
                  check=False)
    assert_one_line_error(proc, "no signature exists")
    assert image_names(ociroot) == [unsigned]
    good = write_context(tmp_path / "good", f"FROM {signed}\nRUN echo ran\n")
    ociimg(ociroot, "build", "--policy", str(policy), "-t", "good", str(good))
    assert "docker.io/library/good:latest" in image_names(ociroot)
    assert_clean(ociroot)

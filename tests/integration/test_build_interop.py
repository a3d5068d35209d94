"""``ociimg build`` against ``buildah bud`` (Debian's): the same Containerfile gives the
same file tree (modes, owners, sizes, link targets, xattrs; umoci unpacks both) and the
same config fields; the image we build, pushed to a loopback registry, runs under podman
and under ``ociimg run`` on a clean root."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.integration.cli_helpers import ociimg
from tests.treewalk import diff_manifests, tree_manifest

CONTAINERFILE = """\
ARG BASE
FROM $BASE
ENV GREETING=hello PATH=/usr/bin:/bin
RUN echo "$GREETING" > /hello && rm /etc/group && mkdir -p /var/x && echo y > /var/x/y \\
    && ln /var/x/y /var/x/hard && chmod 4755 /var/x/y
WORKDIR /app
COPY src/ ./
COPY --chown=1234:99 --chmod=0640 top.txt /owned.txt
COPY src /srcdir
EXPOSE 8080 53/udp
VOLUME /data
USER 1000:1000
LABEL org.example=yes
STOPSIGNAL SIGINT
ENTRYPOINT ["/bin/sh", "-c"]
CMD ["cat /hello"]
"""
FIELDS = ("Env", "Cmd", "Entrypoint", "WorkingDir", "User", "ExposedPorts", "Volumes",
          "Labels", "StopSignal")
# buildah leaves the mount points of its RUN containers (/etc/hosts, /etc/resolv.conf,
# /run) in the image as empty stubs; BuildKit and ociimg remove what they created.
BUILDAH_STUBS = ("etc/hosts", "etc/resolv.conf", "run")


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    # podman and buildah refuse a runroot path longer than 50 characters.
    path = Path(tempfile.mkdtemp(prefix="ociimg-bi-"))
    yield path
    subprocess.run(["umount", "-R", "-l", str(path)], check=False, capture_output=True)
    shutil.rmtree(path, ignore_errors=True)


def containers_tool(name: str, tmp: Path) -> tuple[list[str], dict[str, str]]:
    tool = shutil.which(name)
    need(tool is not None, f"{name} missing: apt-get install {name}")
    conf = tmp / "containers.conf"
    conf.write_text('[engine]\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n')
    env = dict(os.environ, CONTAINERS_CONF=str(conf))
    need(shutil.which("runc") is not None, "runc missing: apt-get install runc")
    return [str(tool), "--root", str(tmp / f"{name}-root"), "--runroot",
            str(tmp / f"{name}-run"), "--storage-driver", "vfs"], env


def make_context(path: Path) -> Path:
    (path / "src" / "sub").mkdir(parents=True)
    (path / "src" / "a.txt").write_text("a\n")
    (path / "src" / "sub" / "b.txt").write_text("b\n")
    os.chmod(path / "src" / "sub" / "b.txt", 0o600)
    (path / "src" / "link").symlink_to("a.txt")
    (path / "top.txt").write_text("top\n")
    (path / "Containerfile").write_text(CONTAINERFILE)
    return path


def umoci_unpack(layout: Path, tag: str, dest: Path) -> tuple[dict, dict]:
    need(shutil.which("umoci") is not None, "umoci missing: apt-get install umoci")
    subprocess.run(["umoci", "unpack", "--image", f"{layout}:{tag}", str(dest)], check=True,
                   capture_output=True)
    index = json.loads((layout / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == tag)

    def blob(digest: str) -> dict:
        return json.loads((layout / "blobs" / "sha256" / digest[7:]).read_bytes())

    config = blob(blob(desc["digest"])["config"]["digest"])
    return tree_manifest(dest / "rootfs", mtimes=False), config


def test_same_tree_and_config_as_buildah(ociroot: Path, pushed_fixtures: dict[str, str],
                                         short_tmp: Path) -> None:
    base = pushed_fixtures["busybox"]
    ctx = make_context(short_tmp / "ctx")
    ociimg(ociroot, "pull", base)
    ociimg(ociroot, "build", "-q", "--build-arg", f"BASE={base}", "-t", "interop", str(ctx))
    ours, our_config = umoci_unpack(ociroot / "store", "docker.io/library/interop:latest",
                                    short_tmp / "ours")

    buildah, env = containers_tool("buildah", short_tmp)
    subprocess.run([*buildah, "bud", "--runtime", "runc", "--tls-verify=false",
                    "--format", "oci", "--build-arg", f"BASE={base}", "-t", "interop",
                    str(ctx)], check=True, capture_output=True, env=env, timeout=600)
    layout = short_tmp / "buildah-layout"
    subprocess.run([*buildah, "push", "localhost/interop", f"oci:{layout}:interop"],
                   check=True, capture_output=True, env=env, timeout=300)
    theirs, their_config = umoci_unpack(layout, "interop", short_tmp / "theirs")

    for stub in BUILDAH_STUBS:
        if stub not in ours:
            theirs.pop(stub, None)
    assert diff_manifests(ours, theirs) == []
    assert ours["var/x/y"]["mode"] == oct(0o4755)
    assert ours["app/link"]["target"] == "a.txt"
    assert ours["owned.txt"]["uid"] == 1234 and ours["owned.txt"]["gid"] == 99
    assert "etc/group" not in ours
    their_config["config"]["Labels"].pop("io.buildah.version")  # buildah signs its work
    for key in FIELDS:
        assert our_config["config"].get(key) == their_config["config"].get(key), key


def test_pushed_build_runs_under_podman_and_ociimg(ociroot: Path, registry,
                                                   pushed_fixtures: dict[str, str],
                                                   short_tmp: Path, tmp_path: Path) -> None:
    base = pushed_fixtures["busybox"]
    ctx = make_context(short_tmp / "ctx")
    target = f"{registry.host}/built/interop:1"
    ociimg(ociroot, "pull", base)
    ociimg(ociroot, "build", "-q", "--build-arg", f"BASE={base}", "-t", target, str(ctx))
    ociimg(ociroot, "push", target)

    clean = tmp_path / "clean-root"
    try:
        ociimg(clean, "pull", target)
        assert ociimg(clean, "run", "--rm", target).stdout == "hello\n"
    finally:
        subprocess.run(["umount", "-R", "-l", str(clean)], check=False, capture_output=True)

    podman, env = containers_tool("podman", short_tmp)
    limits = ["--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
    try:
        run = subprocess.run([*podman, "run", "--rm", "--runtime", "runc",
                              "--tls-verify=false", *limits, target],
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.returncode == 0, run.stderr
        assert run.stdout == "hello\n"
        run = subprocess.run([*podman, "run", "--rm", "--runtime", "runc", *limits,
                              "--entrypoint", "", target, "sh", "-c",
                              "id -u; cat /app/a.txt; readlink /app/link"],
                             capture_output=True, text=True, timeout=300, env=env)
        assert run.stdout == "1000\na\na.txt\n", run.stderr
    finally:
        subprocess.run([*podman, "rmi", "-af"], capture_output=True, timeout=120, env=env)

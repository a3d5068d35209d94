"""``ociimg build`` features beyond RUN/COPY: --squash, RUN --mount (cache, bind, secret,
tmpfs), heredocs, ONBUILD, ENTRYPOINT/CMD/HEALTHCHECK config, ARG scoping in history,
ADD of a local archive and of a URL (Last-Modified), --output/--iidfile, zstd."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.httpserve import serving
from tests.integration.cli_helpers import ociimg
from tests.integration.test_build_e2e import (
    assert_clean,
    build,
    layer_names,
    stored,
    write_context,
)


@pytest.fixture
def base(ociroot: Path, pushed_fixtures: dict[str, str]) -> str:
    ref = pushed_fixtures["busybox"]
    ociimg(ociroot, "pull", ref)
    return ref


def test_squash_gives_one_layer_and_keeps_deletions(ociroot: Path, base: str,
                                                    tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base}
RUN echo one > /one && rm /etc/group
COPY f.txt /f.txt
RUN rm /one && echo two > /two
ENV X=1
""", {"f.txt": "f\n"})
    build(ociroot, ctx, "--squash", "-t", "squashed")
    manifest, config = stored(ociroot, "docker.io/library/squashed:latest")
    assert len(manifest["layers"]) == 2  # busybox + the squashed one
    names = layer_names(ociroot, manifest["layers"][1])
    assert {"f.txt", "two", "etc/.wh.group"} <= set(names) and "one" not in names
    assert [h for h in config["history"] if not h.get("empty_layer")][-1]["created_by"] \
        .startswith("squashed 3 layers")
    out = ociimg(ociroot, "run", "--rm", "squashed", "sh", "-c",
                 "ls /one /etc/group 2>&1 | wc -l; cat /two /f.txt").stdout
    assert out == "2\ntwo\nf\n"
    assert_clean(ociroot)


def test_run_mounts_cache_bind_secret_tmpfs(ociroot: Path, base: str, tmp_path: Path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cr3t\n")
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base}
ARG N=1
RUN --mount=type=cache,target=/cache echo run$N >> /cache/log && cat /cache/log > /seen
RUN --mount=type=bind,source=data,target=/data cat /data/d.txt > /bound \\
    && (touch /data/x 2>/dev/null && echo writable || echo read-only) >> /bound
RUN --mount=type=secret,id=token cat /run/secrets/token > /got-secret
RUN --mount=type=tmpfs,target=/scratch echo t > /scratch/t && ls /scratch > /tmpfs
""", {"data/d.txt": "from-context\n"})
    args = ("--secret", f"id=token,src={secret}", "-t", "mounts")
    build(ociroot, ctx, *args)
    build(ociroot, ctx, *args, "--build-arg", "N=2")
    out = ociimg(ociroot, "run", "--rm", "mounts", "sh", "-c",
                 "cat /seen /bound /got-secret /tmpfs; ls /cache /scratch /data /run/secrets "
                 "2>&1 | grep -c 'No such file'").stdout
    assert out == "run1\nrun2\nfrom-context\nread-only\ns3cr3t\nt\n4\n"
    manifest, config = stored(ociroot, "docker.io/library/mounts:latest")
    assert "s3cr3t" not in json.dumps(config)
    for layer in manifest["layers"][1:]:
        assert not {"cache", "data", "scratch", "run"} & \
            {n.split("/")[0] for n in layer_names(ociroot, layer)}


def test_heredocs_entrypoint_healthcheck_and_args(ociroot: Path, base: str,
                                                  tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"""\
ARG GLOBAL=g
FROM {base} AS parent
CMD ["inherited"]
FROM parent
ARG GLOBAL
ARG V=default
RUN <<EOF
echo "heredoc $V $GLOBAL" > /h1
EOF
RUN <<EOF
#!/bin/sh
echo "script $0" > /h2
EOF
COPY <<EOF /etc/conf
value=$V
EOF
ENTRYPOINT ["/bin/sh", "-c"]
HEALTHCHECK --interval=5s --retries=2 CMD true
STOPSIGNAL SIGQUIT
EXPOSE 8080
""")
    build(ociroot, ctx, "--build-arg", "V=cli", "--build-arg", "HTTP_PROXY=http://p:1",
          "-t", "features")
    _, config = stored(ociroot, "docker.io/library/features:latest")
    cfg = config["config"]
    assert cfg["Entrypoint"] == ["/bin/sh", "-c"] and "Cmd" not in cfg  # CMD reset
    assert cfg["Healthcheck"] == {"Test": ["CMD-SHELL", "true"], "Interval": 5_000_000_000,
                                  "Retries": 2}
    assert cfg["StopSignal"] == "SIGQUIT" and cfg["ExposedPorts"] == {"8080/tcp": {}}
    history = json.dumps(config["history"])
    assert "HTTP_PROXY" not in history and "http://p:1" not in history
    assert "V=cli" in history
    out = ociimg(ociroot, "run", "--rm", "features", "cat /h1 /h2 /etc/conf").stdout
    assert out == "heredoc cli g\nscript /dev/pipes/EOF\nvalue=cli\n"


def test_onbuild_triggers_run_in_the_child(ociroot: Path, base: str, tmp_path: Path) -> None:
    parent = write_context(tmp_path / "parent", f"FROM {base}\nONBUILD RUN echo fired > /fired\n"
                           "ONBUILD COPY marker /marker\n")
    build(ociroot, parent, "-t", "onbuild-parent")
    _, pconfig = stored(ociroot, "docker.io/library/onbuild-parent:latest")
    assert pconfig["config"]["OnBuild"] == ["RUN echo fired > /fired", "COPY marker /marker"]
    child = write_context(tmp_path / "child", "FROM onbuild-parent\nRUN cat /fired /marker\n",
                          {"marker": "m\n"})
    out = build(ociroot, child, "-t", "onbuild-child")
    assert "fired\nm\n" in out.stderr
    _, config = stored(ociroot, "docker.io/library/onbuild-child:latest")
    assert "OnBuild" not in config["config"]


@pytest.fixture
def http_files(tmp_path: Path) -> Iterator[str]:
    served = tmp_path / "served"
    served.mkdir()
    (served / "remote.txt").write_text("remote\n")
    handler = type("H", (http.server.SimpleHTTPRequestHandler,), {
        "log_message": lambda *a: None,
        "__init__": lambda self, *a, **kw: http.server.SimpleHTTPRequestHandler.__init__(
            self, *a, directory=str(served), **kw)})
    import os
    os.utime(served / "remote.txt", (1_600_000_000, 1_600_000_000))
    with serving(handler) as url:
        yield url


def test_add_extracts_local_archives_and_downloads_urls(ociroot: Path, base: str,
                                                        tmp_path: Path, http_files: str) -> None:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("pkg/inside.txt")
        data = b"inside\n"
        info.size, info.uid, info.gid, info.mode = len(data), 42, 43, 0o640
        tar.addfile(info, io.BytesIO(data))
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base}
ADD bundle.tar.gz /opt/
ADD {http_files}/remote.txt /dl/
ADD plain.txt /plain.txt
""", {"plain.txt": "plain\n"})
    (ctx / "bundle.tar.gz").write_bytes(gzip.compress(buf.getvalue()))
    build(ociroot, ctx, "-t", "added")
    out = ociimg(ociroot, "run", "--rm", "added", "sh", "-c",
                 "cat /opt/pkg/inside.txt /dl/remote.txt /plain.txt; "
                 "stat -c '%u:%g %a' /opt/pkg/inside.txt; stat -c '%a %Y' /dl/remote.txt; "
                 "ls /opt").stdout
    assert out == "inside\nremote\nplain\n42:43 640\n600 1600000000\npkg\n"


def test_output_archive_iidfile_and_zstd(ociroot: Path, base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo z > /z\n")
    archive, iid = tmp_path / "out.tar", tmp_path / "iid"
    out = build(ociroot, ctx, "-q", "--compression", "zstd", "--iidfile", str(iid),
                "--output", f"type=oci-archive,dest={archive}", "-t", "zimg:7")
    assert iid.read_text() == out.stdout.strip()
    manifest, _ = stored(ociroot, "docker.io/library/zimg:7")
    assert manifest["layers"][-1]["mediaType"].endswith("+zstd")
    with tarfile.open(archive) as tar:
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "7"
    clean = tmp_path / "clean"
    ociimg(clean, "run", "--rm", f"oci-archive:{archive}:7", "cat", "/z", check=False)
    copied = ociimg(clean, "copy", f"oci-archive:{archive}:7", f"oci:{tmp_path / 'lay'}:7")
    assert copied.returncode == 0


def test_host_network_gets_the_resolver_config_and_unused_args_warn(
        ociroot: Path, base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN cat /etc/resolv.conf > /r\n")
    out = build(ociroot, ctx, "--network", "host", "--build-arg", "NOBODY=1", "-t", "net")
    assert "warning: build args not consumed: NOBODY" in out.stderr
    manifest, _ = stored(ociroot, "docker.io/library/net:latest")
    names = layer_names(ociroot, manifest["layers"][-1])
    assert names == ["r"]  # the bind-mounted resolv.conf's mount point did not stay
    got = ociimg(ociroot, "run", "--rm", "net", "cat", "/r").stdout
    assert got == Path("/etc/resolv.conf").read_text()


def test_bind_mount_from_a_stage_resolves_inside_it(ociroot: Path, base: str,
                                                    tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base} AS src
RUN mkdir /d && echo staged > /d/f && ln -s /etc /d/up
FROM {base}
RUN --mount=type=bind,from=src,source=/d,target=/m cat /m/f > /got && ls /m/up/ > /up
""")
    build(ociroot, ctx, "-t", "bindfrom")
    out = ociimg(ociroot, "run", "--rm", "bindfrom", "sh", "-c", "cat /got; grep -c passwd /up")
    assert out.stdout == "staged\n1\n"


def test_wildcards_one_match_is_a_file_many_need_a_dir(ociroot: Path, base: str,
                                                       tmp_path: Path) -> None:
    files = {"a.txt": "a\n", "b.txt": "b\n", "only.conf": "c\n"}
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nCOPY *.conf /etc/the.conf\n"
                        "COPY *.txt nomatch* /txt/\n", files)
    build(ociroot, ctx, "-t", "wild")
    out = ociimg(ociroot, "run", "--rm", "wild", "cat", "/etc/the.conf", "/txt/a.txt",
                 "/txt/b.txt").stdout
    assert out == "c\na\nb\n"
    bad = write_context(tmp_path / "bad", f"FROM {base}\nCOPY *.txt /txt\n", files)
    proc = build(ociroot, bad, "-q", check=False)
    assert proc.returncode != 0 and "must be a directory and end with a /" in proc.stderr


def test_copy_parents_and_exclude(ociroot: Path, base: str, tmp_path: Path) -> None:
    files = {"app/x/one.txt": "1\n", "app/y/two.txt": "2\n", "app/y/skip.log": "no\n",
             "app/z/three.txt": "3\n"}
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base}
COPY --parents app/*/*.txt /p/
COPY --exclude=**/*.log --exclude=app/z app /e/
""", files)
    build(ociroot, ctx, "-t", "parents")
    out = ociimg(ociroot, "run", "--rm", "parents", "sh", "-c",
                 "cd /p && find . -type f | sort; cd /e && find . | sort").stdout
    assert out == ("./app/x/one.txt\n./app/y/two.txt\n./app/z/three.txt\n"
                   ".\n./x\n./x/one.txt\n./y\n./y/two.txt\n")


def test_symbolic_chmod(ociroot: Path, base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nCOPY --chmod=u+x,go-r d /d/\n",
                        {"d/f": "f\n"})
    build(ociroot, ctx, "-t", "symchmod")
    out = ociimg(ociroot, "run", "--rm", "symchmod", "stat", "-c", "%a", "/d/f").stdout
    assert out == "700\n"  # 644 → u+x → 744 → go-r → 700


def test_add_checksum_is_checked(ociroot: Path, base: str, tmp_path: Path,
                                 http_files: str) -> None:
    import hashlib
    good = "sha256:" + hashlib.sha256(b"remote\n").hexdigest()
    bad = "sha256:" + "0" * 64
    ok = write_context(tmp_path / "ok", f"FROM {base}\nADD --checksum={good} "
                       f"{http_files}/remote.txt /r\n")
    build(ociroot, ok, "-q", "-t", "checked")
    wrong = write_context(tmp_path / "wrong", f"FROM {base}\nADD --checksum={bad} "
                          f"{http_files}/remote.txt /r\n")
    proc = build(ociroot, wrong, "-q", check=False)
    assert proc.returncode != 0 and "hashed to sha256:" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_base_pulled_on_demand_and_platform_args(ociroot: Path,
                                                 pushed_fixtures: dict[str, str],
                                                 tmp_path: Path) -> None:
    import platform as host
    ref = pushed_fixtures["busybox"]  # not pulled first: FROM pulls it (--pull: again)
    ctx = write_context(tmp_path / "ctx", f"""\
ARG BASE={ref}
FROM --platform=$BUILDPLATFORM $BASE
ARG TARGETARCH
ARG BUILDPLATFORM
RUN echo "$TARGETARCH $BUILDPLATFORM" > /arch
""")
    build(ociroot, ctx, "--pull", "-t", "plat")
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(host.machine(), host.machine())
    out = ociimg(ociroot, "run", "--rm", "plat", "cat", "/arch").stdout
    assert out == f"{arch} linux/{arch}\n"

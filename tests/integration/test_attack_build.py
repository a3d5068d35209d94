"""Attacks on ``ociimg build`` by its Containerfile and context: symlinks in the image
(made by an earlier RUN) pointing at host paths must keep COPY, ADD and RUN mounts inside
the image; RUN mount points made through such a symlink must not stay in the layer; bad
mount options are one-line errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.integration.cli_helpers import assert_one_line_error, ociimg
from tests.integration.test_build_e2e import assert_clean, build, layer_names, stored, write_context


@pytest.fixture
def base(ociroot: Path, pushed_fixtures: dict[str, str]) -> str:
    ref = pushed_fixtures["busybox"]
    ociimg(ociroot, "pull", ref)
    return ref


def test_image_symlinks_to_host_paths_keep_copy_and_mounts_inside(
        ociroot: Path, base: str, tmp_path: Path) -> None:
    host = tmp_path / "host"
    host.mkdir()
    (host / "keep").write_text("host\n")
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base} AS s1
RUN ln -s {host} /abs && ln -s / /top && mkdir -p /d && ln -s ../../../../../../{host} /d/up
COPY f /abs/copied
COPY f /top/{host}/via-top
COPY f /d/up/via-up
ADD t.tar /abs/
RUN --mount=type=bind,source=f,target=/abs/bound --mount=type=tmpfs,target=/abs/tmp \\
    --mount=type=cache,target=/abs/cache true
RUN ls {host} | sort | tr '\\n' ' ' > /seen
FROM {base}
COPY --from=s1 /abs/ /out/
COPY --from=s1 /top/../../{host}/copied /seen /
""", {"f": "pwned\n"})
    import tarfile
    with tarfile.open(ctx / "t.tar", "w") as tar:
        info = tarfile.TarInfo("from-tar")
        tar.addfile(info)
    build(ociroot, ctx, "-t", "sym")
    assert sorted(os.listdir(host)) == ["keep"]
    out = ociimg(ociroot, "run", "--rm", "sym", "sh", "-c",
                 "cat /seen /copied; echo; ls /out | tr '\\n' ' '").stdout
    # Inside the image everything landed under the image's own copy of the host path
    # (the --from side resolved in the stage, never on the host: no "keep"), and the
    # mount points made for the RUN's mounts were removed again.
    assert out == "copied from-tar via-top via-up pwned\n\ncopied from-tar via-top via-up ", out
    assert_clean(ociroot)


def test_mount_points_made_through_an_image_symlink_leave_the_layer(
        ociroot: Path, base: str, tmp_path: Path) -> None:
    """/var/run -> /run (Debian) or merged /usr: a mount target through a symlinked dir
    is made at the resolved place; it goes again after the RUN (BuildKit's stub cleaner)."""
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base}
RUN mkdir /real && ln -s /real /link
RUN --mount=type=bind,source=f,target=/link/bound --mount=type=tmpfs,target=/link/tmp \\
    --mount=type=cache,target=/link/deep/cache true
""", {"f": "x\n"})
    build(ociroot, ctx, "-t", "stubs")
    manifest, _ = stored(ociroot, "docker.io/library/stubs:latest")
    names = [n for layer in manifest["layers"][1:] for n in layer_names(ociroot, layer)]
    assert sorted(n.strip("./") for n in names) == ["link", "real"], names
    assert ociimg(ociroot, "run", "--rm", "stubs", "ls", "-A", "/real").stdout == ""


@pytest.mark.parametrize("mount", [
    "type=secret,id=s,mode=zz", "type=secret,id=s,uid=99999999999", "type=secret,id=s,uid=-1",
    "type=cache,target=/c,uid=99999999999", "type=cache,target=/c,gid=-5",
    "type=cache,target=/c,mode=77777"])
def test_bad_mount_modes_and_ids_are_one_line_errors(ociroot: Path, base: str, tmp_path: Path,
                                                     mount: str) -> None:
    secret = tmp_path / "s.txt"
    secret.write_text("s\n")
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN --mount={mount} true\n")
    proc = build(ociroot, ctx, "-q", "--secret", f"id=s,src={secret}", check=False)
    assert_one_line_error(proc, "bad mode, uid or gid")
    assert not list((ociroot / "build-cache" / "mounts").glob("*")) \
        if (ociroot / "build-cache" / "mounts").is_dir() else True
    assert_clean(ociroot)


def test_a_context_bind_source_is_pinned_before_the_runtime_mounts_it(
        tmp_path: Path, root: None) -> None:
    """Whoever can write the context could swap ``sub`` for a symlink to any host dir
    between the check and the runtime's mount (5 builds in 30 read the host dir). The
    runtime gets a private read-only bind of what the check resolved: swapping the
    context afterwards changes nothing it sees."""
    from ociimg.build.builder import Builder, BuildOptions
    from ociimg.build.context import BuildContext
    from ociimg.build.dockerfile import parse
    from ociimg.build.ignore import IgnoreRules
    ctx, host = tmp_path / "ctx", tmp_path / "host"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "sub" / "secret.txt").write_text("ctx\n")
    host.mkdir()
    (host / "secret.txt").write_text("HOST\n")
    context = BuildContext.from_dir(ctx, IgnoreRules([]))
    builder = Builder(tmp_path / "root", parse("FROM scratch\n"), context, BuildOptions(),
                      lambda *_a, **_k: None)  # type: ignore[arg-type,return-value]
    with builder._stack:
        pinned, _ = builder._bind_source(None, {"source": "sub"})  # type: ignore[arg-type]
        assert not str(pinned).startswith(str(ctx))
        os.rename(ctx / "sub", ctx / "sub.real")
        (ctx / "sub").symlink_to(host)
        assert (pinned / "secret.txt").read_text() == "ctx\n"
        with pytest.raises(OSError):
            (pinned / "new").write_text("x")  # read-only on the host side too
        work = builder._work
    assert work is not None and not work.exists()  # unmounted, then removed
    assert (ctx / "sub.real" / "secret.txt").read_text() == "ctx\n"


def test_swapping_context_dirs_for_host_links_during_builds_reads_nothing_outside(
        ociroot: Path, base: str, tmp_path: Path) -> None:
    """A writer of the context flips ``sub`` between a dir and a link to a host dir
    while builds run: each build fails cleanly or reads the context, never the host
    (ADD of a local archive and RUN --mount=type=bind; before the fixes about 1 build
    in 6 read the host's)."""
    import tarfile
    import threading
    ctx, host = tmp_path / "ctx", tmp_path / "host"
    for d, word in ((ctx / "sub", "ctx"), (host, "HOST")):
        d.mkdir(parents=True)
        (d / "secret.txt").write_text(f"{word}\n")
        with tarfile.open(d / "a.tar", "w") as tar:
            tar.add(d / "secret.txt", arcname=f"from-{word}")
    (ctx / "Containerfile").write_text(f"""\
FROM {base}
ADD sub/a.tar /x/
RUN --mount=type=bind,source=sub,target=/m cat /m/secret.txt; ls /x
""")
    stop = threading.Event()

    def swap() -> None:
        while not stop.is_set():
            os.rename(ctx / "sub", ctx / "sub.real")
            (ctx / "sub.lnk").symlink_to(host)
            os.rename(ctx / "sub.lnk", ctx / "sub")
            stop.wait(0.002)  # a dwell in each state, not a wait for anything
            os.rename(ctx / "sub", ctx / "sub.lnk")
            (ctx / "sub.lnk").unlink()
            os.rename(ctx / "sub.real", ctx / "sub")
            stop.wait(0.002)

    swapper = threading.Thread(target=swap)
    swapper.start()
    try:
        outputs = [build(ociroot, ctx, "--no-cache", check=False) for _ in range(12)]
    finally:
        stop.set()
        swapper.join()
    for proc in outputs:
        assert "HOST" not in proc.stderr + proc.stdout, proc.stderr
        assert "Traceback" not in proc.stderr, proc.stderr
    assert_clean(ociroot)


@pytest.fixture
def hostile_http(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Serves /t.tar (a tar), /to-file (a redirect to file:///etc/passwd) and
    /to-self-loop (redirects forever)."""
    import http.server
    import io
    import tarfile

    from tests.httpserve import serving
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo("inside.txt")
        info.size = 3
        tar.addfile(info, io.BytesIO(b"in\n"))
    body = buf.getvalue()

    class Handler(http.server.BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:  # noqa: N802
            if self.path == "/t.tar":
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                return
            self.send_response(302)
            self.send_header("Location", "file:///etc/passwd" if self.path == "/to-file"
                             else self.path)
            self.send_header("Content-Length", "0")
            self.end_headers()

    with serving(Handler) as url:
        yield url


def test_traps_global_arg_url_tar_opaque_dir_and_workdir_owner(
        ociroot: Path, base: str, tmp_path: Path, hostile_http: str) -> None:
    """anchors-next §1.3: a global ARG is empty in a stage until re-declared (1), a
    downloaded tar is never extracted (13), ``rm -rf d && mkdir d`` hides the old
    content (15), a WORKDIR made under USER belongs to that user (8)."""
    ctx = write_context(tmp_path / "ctx", f"""\
ARG G=global
FROM {base}
RUN echo "g=[$G]" > /g
ADD {hostile_http}/t.tar /dl/
RUN mkdir -p /d && echo old > /d/old
RUN rm -rf /d && mkdir /d && echo new > /d/new
USER 1234
WORKDIR /wd
""")
    build(ociroot, ctx, "-t", "traps")
    out = ociimg(ociroot, "run", "--rm", "--user", "0", "traps", "sh", "-c",
                 "cat /g; ls /dl /d; stat -c %u /wd").stdout
    assert out == "g=[]\n/d:\nnew\n\n/dl:\nt.tar\n1234\n", out


@pytest.mark.parametrize(("path", "needle"), [("/to-file", "file:///etc/passwd"),
                                               ("/loop", "redirects")])
def test_add_url_redirects_out_of_http_or_forever_are_refused(
        ociroot: Path, base: str, tmp_path: Path, hostile_http: str, path: str,
        needle: str) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nADD {hostile_http}{path} /x\n")
    proc = build(ociroot, ctx, "-q", check=False)
    assert_one_line_error(proc, needle)
    assert_clean(ociroot)


def test_a_script_heredoc_with_a_path_for_a_name_is_refused(ociroot: Path, base: str,
                                                            tmp_path: Path) -> None:
    """``RUN <<../../tmp/x`` with a ``#!`` body: its name became the script's mount point
    (/dev/pipes/../../tmp/x, a mount point left in the image's /tmp)."""
    ctx = write_context(tmp_path / "ctx",
                        f"FROM {base}\nRUN <<../../tmp/x\n#!/bin/sh\necho hi\n../../tmp/x\n")
    assert_one_line_error(build(ociroot, ctx, "-q", check=False), "plain name")
    assert_clean(ociroot)

"""``ociimg build`` for real: RUN steps as containers over busybox from the fixtures,
COPY/ADD from a context, multi-stage, the step cache, reproducible digests, and every
error leaving nothing behind (no tag, container, active snapshot or mount)."""

from __future__ import annotations

import gzip
import io
import json
import os
import signal
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.cli_helpers import assert_one_line_error, ociimg, ociimg_background
from tests.waiting import wait_for_line, wait_until


@pytest.fixture
def base(ociroot: Path, pushed_fixtures: dict[str, str]) -> str:
    """busybox (the fixture, pushed by skopeo) pulled into ``ociroot``'s store."""
    ref = pushed_fixtures["busybox"]
    ociimg(ociroot, "pull", ref)
    return ref


def write_context(path: Path, containerfile: str, files: dict[str, str] | None = None) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / "Containerfile").write_text(containerfile)
    for name, text in (files or {}).items():
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text(text)
    return path


def build(root: Path, context: Path, *args: str, check: bool = True
          ) -> subprocess.CompletedProcess[str]:
    return ociimg(root, "build", *args, str(context), check=check)


def events(proc: subprocess.CompletedProcess[str]) -> list[dict]:
    return [json.loads(line) for line in proc.stdout.splitlines() if line.strip()]


def stored(root: Path, name: str) -> tuple[dict, dict]:
    """(manifest, config) of ``name`` read straight from the store's OCI layout."""
    store = root / "store"
    index = json.loads((store / "index.json").read_text())
    desc = next(m for m in index["manifests"]
                if m["annotations"]["org.opencontainers.image.ref.name"] == name)

    def blob(digest: str) -> bytes:
        return (store / "blobs" / "sha256" / digest.split(":")[1]).read_bytes()

    manifest = json.loads(blob(desc["digest"]))
    return manifest, json.loads(blob(manifest["config"]["digest"]))


def layer_names(root: Path, layer: dict) -> list[str]:
    data = (root / "store" / "blobs" / "sha256" / layer["digest"].split(":")[1]).read_bytes()
    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(data))) as tar:
        return tar.getnames()


def assert_clean(root: Path) -> None:
    """No container, active snapshot or build temp is left."""
    containers = root / "containers"
    left = [p.name for p in containers.iterdir() if len(p.name) == 64 or
            p.name.startswith(".tmp-")] if containers.is_dir() else []
    assert left == [], left
    active = root / "snapshots" / "active"
    left = [p.name for p in active.iterdir() if not p.name.startswith(".")] \
        if active.is_dir() else []
    assert left == [], left
    assert not list((root / "build-cache").glob(".work-*"))


CONTAINERFILE = """\
ARG BASE
FROM $BASE
ENV GREETING=hello
RUN echo "$GREETING world" > /hello && rm /etc/group
WORKDIR /app
COPY src/ ./
COPY --chown=1234:99 --chmod=0640 top.txt /owned.txt
CMD ["cat", "/hello"]
"""


def test_build_runs_copies_deletes_and_the_image_runs(ociroot: Path, base: str,
                                                      tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", CONTAINERFILE,
                        {"src/a.txt": "a\n", "src/sub/b.txt": "b\n", "top.txt": "top\n"})
    (ctx / "src" / "link").symlink_to("a.txt")
    out = build(ociroot, ctx, "--build-arg", f"BASE={base}", "-t", "built:1")
    image_id = out.stdout.strip()
    assert image_id.startswith("sha256:")
    assert "STEP 3/7: RUN" in out.stderr
    manifest, config = stored(ociroot, "docker.io/library/built:1")
    assert manifest["config"]["digest"] == image_id
    assert config["config"]["Cmd"] == ["cat", "/hello"]
    assert config["config"]["WorkingDir"] == "/app"
    assert "GREETING=hello" in config["config"]["Env"]
    # base layer + RUN + WORKDIR + two COPYs; metadata steps are empty_layer history.
    assert len(manifest["layers"]) == len(config["rootfs"]["diff_ids"]) == 5
    run_layer = layer_names(ociroot, manifest["layers"][1])
    assert "etc/.wh.group" in run_layer and "hello" in run_layer
    created_by = [h.get("created_by", "") for h in config["history"]]
    assert any(c.startswith("RUN /bin/sh -c echo") and c.endswith("# buildkit")
               for c in created_by)
    assert {"created_by": "ENV GREETING=hello", "empty_layer": True}.items() <= \
        next(h for h in config["history"] if h.get("created_by") == "ENV GREETING=hello").items()
    # No mount point the runtime made (/proc, /dev, /sys) leaks into a layer.
    for layer in manifest["layers"][1:]:
        assert not {"proc", "dev", "sys"} & {n.split("/")[0] for n in layer_names(ociroot, layer)}
    assert ociimg(ociroot, "run", "--rm", "built:1").stdout == "hello world\n"
    check = ociimg(ociroot, "run", "--rm", "built:1", "sh", "-c",
                   "test -e /etc/group && echo group-back; cat a.txt sub/b.txt; "
                   "stat -c '%u:%g %a' /owned.txt /app/a.txt; readlink link").stdout
    assert check == "a\nb\n1234:99 640\n0:0 644\na.txt\n"
    assert_clean(ociroot)


def test_multi_stage_builds_only_what_the_target_needs(ociroot: Path, base: str,
                                                       tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
ARG BASE
FROM $BASE AS builder
RUN mkdir /out && echo built > /out/artifact

FROM $BASE AS broken
RUN echo never-run; exit 9

FROM scratch
COPY --from=builder /bin/busybox /bin/busybox
COPY --from=builder /out/ /out
RUN ["/bin/busybox", "sh", "-c", "/bin/busybox echo ran > /out/ran"]
ENTRYPOINT ["/bin/busybox"]
CMD ["cat", "/out/artifact"]
""")
    out = build(ociroot, ctx, "--build-arg", f"BASE={base}", "-t", "multi")
    assert "never-run" not in out.stderr
    manifest, config = stored(ociroot, "docker.io/library/multi:latest")
    assert len(config["rootfs"]["diff_ids"]) == 3
    # From scratch the runtime had to make /proc, /dev, /sys: not in the RUN's layer.
    assert layer_names(ociroot, manifest["layers"][2]) == ["out", "out/ran"]
    assert ociimg(ociroot, "run", "--rm", "multi").stdout == "built\n"
    # --target stops at a stage; the broken one is built only when asked for.
    build(ociroot, ctx, "--build-arg", f"BASE={base}", "--target", "builder", "-t", "stage1")
    failed = build(ociroot, ctx, "--build-arg", f"BASE={base}", "--target", "broken",
                   "-t", "broken", "-q", check=False)
    assert failed.returncode == 9
    assert_one_line_error(failed, "Containerfile:6: RUN: exited with code 9", "never-run")
    images = ociimg(ociroot, "images").stdout
    assert "stage1" in images and "broken" not in images
    assert_clean(ociroot)


def test_cache_hits_misses_and_no_cache(ociroot: Path, base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", """\
ARG BASE
FROM $BASE
RUN echo $RANDOM$RANDOM > /first
COPY data.txt /data.txt
RUN cat /data.txt /first > /combined
""", {"data.txt": "one\n"})
    args = ("--build-arg", f"BASE={base}", "--json", "-t", "cached")
    first = events(build(ociroot, ctx, *args))
    image = first[-1]["id"]
    assert first[-1]["cached"] == 0 and first[-1]["steps"] == 3
    again = events(build(ociroot, ctx, *args))
    assert again[-1]["id"] == image and again[-1]["cached"] == 3
    assert not [e for e in again if e["event"] == "output"]  # no container ran
    # An mtime is not content: still all cached.
    os.utime(ctx / "data.txt", (1, 1))
    assert events(build(ociroot, ctx, *args))[-1]["id"] == image
    # A changed file re-runs from the COPY on; the first RUN stays cached.
    (ctx / "data.txt").write_text("two\n")
    changed = events(build(ociroot, ctx, *args))
    assert changed[-1]["cached"] == 1 and changed[-1]["id"] != image
    first_line = ociimg(ociroot, "run", "--rm", "cached", "cat", "/first").stdout
    combined = ociimg(ociroot, "run", "--rm", "cached", "cat", "/combined").stdout
    assert combined == "two\n" + first_line
    # --no-cache runs everything again ($RANDOM makes a new /first).
    fresh = events(build(ociroot, ctx, *args, "--no-cache"))
    assert fresh[-1]["cached"] == 0
    assert ociimg(ociroot, "run", "--rm", "cached", "cat", "/first").stdout != first_line


def test_cache_survives_gc_only_while_an_image_uses_it(ociroot: Path, base: str,
                                                       tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "ARG BASE\nFROM $BASE\nRUN echo x > /x\n")
    args = ("--build-arg", f"BASE={base}", "--json", "-t", "gcme")
    build(ociroot, ctx, *args)
    ociimg(ociroot, "gc")
    assert events(build(ociroot, ctx, *args))[-1]["cached"] == 1
    ociimg(ociroot, "rmi", "gcme")
    ociimg(ociroot, "gc")
    assert events(build(ociroot, ctx, *args))[-1]["cached"] == 0


def test_timestamp_gives_byte_identical_images(ociroot: Path, base: str,
                                               tmp_path: Path) -> None:
    text = "ARG BASE\nFROM $BASE\nCOPY . /ctx/\nRUN echo run > /ran\nLABEL x=y\n"
    a = write_context(tmp_path / "a", text, {"f.txt": "same\n", "d/g.txt": "g\n"})
    b = write_context(tmp_path / "b", text, {"f.txt": "same\n", "d/g.txt": "g\n"})
    for path in b.rglob("*"):
        os.utime(path, (2_000_000_000, 2_000_000_000), follow_symlinks=False)
    digests = set()
    for ctx in (a, b):
        out = build(ociroot, ctx, "--build-arg", f"BASE={base}", "--no-cache",
                    "--timestamp", "1700000000", "-t", "repro", "-q")
        digests.add(out.stdout.strip())
    assert len(digests) == 1
    _, config = stored(ociroot, "docker.io/library/repro:latest")
    assert config["created"] == "2023-11-14T22:13:20Z"
    assert {h["created"] for h in config["history"][-3:]} == {"2023-11-14T22:13:20Z"}


@pytest.mark.parametrize(("containerfile", "needles"), [
    ("FROM {base}\nCOPY ../outside /x\n", ["Containerfile:2", "outside the build context"]),
    ("FROM {base}\nCOPY link /x\n", ["Containerfile:2", "outside the build context"]),
    ("FROM {base}\nCOPY missing.txt /x\n", ["Containerfile:2", "missing.txt"]),
    ("FROM {base}\nCOPY --from=5 /x /x\n", ["stage 5"]),
    ("FROM {base} AS a\nCOPY --from=b /x /x\nFROM {base} AS b\nCOPY --from=a /x /x\n",
     ["circular dependency"]),
    ("FROM {base}\nFROBNICATE x\n", ["FROBNICATE"]),
    ("FROM {base}\nRUN --mount=type=bind,source=../outside,target=/m cat /m\n",
     ["Containerfile:2", "outside the build context"]),
    ("FROM {base}\nRUN --mount=type=bind,source=link,target=/m cat /m\n",
     ["Containerfile:2", "outside the build context"]),
    ("FROM {base}\nRUN --mount=type=secret,id=nope,required=true true\n",
     ["secret 'nope' is required"]),
    ("FROM {base}\nCOPY --chown=nobody-here Containerfile /x\n",
     ["Containerfile:2", "nobody-here"]),
])
def test_errors_are_one_line_and_leave_nothing(ociroot: Path, base: str, tmp_path: Path,
                                               containerfile: str, needles: list[str]) -> None:
    ctx = write_context(tmp_path / "ctx", containerfile.format(base=base))
    (tmp_path / "outside").write_text("host file\n")
    (ctx / "link").symlink_to("/etc/passwd")
    proc = build(ociroot, ctx, "-q", "-t", "bad", check=False)
    assert_one_line_error(proc, *needles)
    assert "bad" not in ociimg(ociroot, "images").stdout
    assert_clean(ociroot)


def test_unknown_target_is_an_error(ociroot: Path, base: str, tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", f"FROM {base} AS one\n")
    assert_one_line_error(build(ociroot, ctx, "-q", "--target", "two", check=False),
                          "target stage 'two' could not be found")


def test_ctrl_c_leaves_no_container_mount_or_snapshot(ociroot: Path, base: str,
                                                      tmp_path: Path) -> None:
    # A token of this run's own: another build may be sleeping on this machine.
    token = f"interrupted-{os.getpid()}-{tmp_path.name}"
    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nRUN echo started; sleep 600 # {token}\n")
    proc = ociimg_background(ociroot, "build", "--json", "-t", "interrupted", str(ctx))
    try:
        wait_for_line(proc, "started")
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode != 0
    assert b"Traceback" not in proc.stderr.read()
    assert "interrupted" not in ociimg(ociroot, "images").stdout
    assert_clean(ociroot)
    wait_until(lambda: token not in subprocess.run(
        ["ps", "-eo", "args"], capture_output=True, text=True).stdout,
        "the interrupted step's process to be gone", timeout=10)


def test_containerfile_and_context_from_stdin(ociroot: Path, base: str,
                                              tmp_path: Path) -> None:
    ctx = write_context(tmp_path / "ctx", "unused", {"f.txt": "from-dir\n"})
    out = ociimg(ociroot, "build", "-f", "-", "-t", "stdin-file", str(ctx),
                 input=f"FROM {base}\nCOPY f.txt /f.txt\n")
    assert out.stdout.startswith("sha256:")
    assert ociimg(ociroot, "run", "--rm", "stdin-file", "cat", "/f.txt").stdout == "from-dir\n"
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in (("Containerfile", f"FROM {base}\nCOPY g.txt /g.txt\n"),
                           ("g.txt", "from-tar\n")):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data.encode()))
    env = {**os.environ, "OCIIMG_ROOT": str(ociroot),
           "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    import sys
    subprocess.run([sys.executable, "-m", "ociimg", "build", "-t", "stdin-tar", "-"],
                   input=buf.getvalue(), env=env, check=True, capture_output=True)
    assert ociimg(ociroot, "run", "--rm", "stdin-tar", "cat", "/g.txt").stdout == "from-tar\n"
    assert_clean(ociroot)


def test_library_build_matches_the_cli(ociroot: Path, base: str, tmp_path: Path) -> None:
    import ociimg as library

    ctx = write_context(tmp_path / "ctx", f"FROM {base}\nCOPY f.txt /f\nRUN cat /f > /g\n",
                        {"f.txt": "lib\n"})
    result = library.build_image(ctx, root=ociroot, tags=["lib:1"], timestamp=1700000000)
    assert result.tags == ("docker.io/library/lib:1",)
    cli = build(ociroot, ctx, "-q", "--no-cache", "--timestamp", "1700000000")
    assert cli.stdout.strip() == str(result.image_id)
    assert ociimg(ociroot, "run", "--rm", "lib:1", "cat", "/g").stdout == "lib\n"
    assert_clean(ociroot)


def test_gc_waits_for_a_running_build(ociroot: Path, base: str, tmp_path: Path) -> None:
    """The build holds a store lease from its first blob to its tag: gc is refused
    meanwhile, so nothing the build wrote but has not tagged yet is swept."""
    ctx = write_context(tmp_path / "ctx", f"""\
FROM {base} AS first
RUN echo kept > /kept
FROM {base}
RUN echo waiting; sleep 2
COPY --from=first /kept /kept
""")
    proc = ociimg_background(ociroot, "build", "--json", "-t", "during-gc", str(ctx))
    try:
        wait_for_line(proc, "waiting")
        refused = ociimg(ociroot, "gc", check=False)
        assert refused.returncode != 0 and "held by another process" in refused.stderr
    finally:
        assert proc.wait(timeout=120) == 0
    assert ociimg(ociroot, "run", "--rm", "during-gc", "cat", "/kept").stdout == "kept\n"
    assert_clean(ociroot)

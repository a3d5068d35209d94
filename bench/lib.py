"""Shared helpers for the benchmarks in bench/: cached images, a local registry, measuring.

Benchmarks run each measured command in a fresh process under GNU time (peak RSS, %M), so
numbers are never polluted by the benchmark driver itself.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import stat
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parent.parent
BUILDER_SCRIPT = REPO / "fixtures" / "build_images.py"

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def load_builder() -> ModuleType:
    """fixtures/build_images.py (a script, not a package)."""
    spec = importlib.util.spec_from_file_location("ociimg_fixture_builder", BUILDER_SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def registry_server() -> ModuleType:
    from tests.integration import registry_server as module

    return module


def use_this_checkout() -> None:
    """Make every ociimg this bench starts import the checkout it lives in: the console
    script finds ociimg through whatever `pip install -e` ran last on this machine,
    which may be another clone (a CI run re-points it)."""
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)


def ociimg_command() -> str:
    """The ``ociimg`` console script installed beside this interpreter, not a pyenv shim
    found on PATH: the shim is a bash script (``pyenv exec``) that adds tens of ms to
    every timed start (more under load)."""
    beside = Path(sys.executable).parent / "ociimg"
    return str(beside) if beside.exists() else (shutil.which("ociimg") or "ociimg")


def precompile() -> None:
    """Write ociimg's bytecode, as installing a wheel does: under PYTHONDONTWRITEBYTECODE
    an editable checkout would otherwise recompile every module on every timed start,
    which no installed ociimg does (and skopeo's start-up is a compiled binary's)."""
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(REPO / "ociimg")],
                   check=False, stdout=subprocess.DEVNULL)


# Cached images -----------------------------------------------------------------------
def cached_big_layout(total_mb: int, layers: int, seed: int = 1,
                      cache_dir: Path | None = None) -> Path:
    """The ``big`` benchmark image as an OCI layout, built once per (script, size, layers,
    seed) under the temp dir and renamed into place when complete."""
    key = hashlib.sha256(BUILDER_SCRIPT.read_bytes())
    key.update(f"{total_mb}:{layers}:{seed}".encode())
    return _cached_layout(
        f"big-{total_mb}m-{layers}l-{key.hexdigest()[:12]}",
        f"{total_mb} MiB / {layers}-layer image",
        lambda layout: load_builder().build_big(layout, total_mb=total_mb, layers=layers,
                                                seed=seed),
        cache_dir)


def _cached_layout(name: str, what: str, build: Callable[[Path], object],
                   cache_dir: Path | None) -> Path:
    """``ociimg-bench-NAME`` under ``cache_dir`` (the temp dir): ``build`` writes the layout
    into a scratch dir the first time, which is renamed into place when complete."""
    base = cache_dir or Path(tempfile.gettempdir())
    final = base / f"ociimg-bench-{name}"
    if (final / "index.json").is_file():
        return final
    scratch = Path(tempfile.mkdtemp(prefix=final.name + ".", dir=base))
    try:
        started = time.monotonic()
        print(f"building the {what} into {final} …", flush=True)
        build(scratch / "layout")
        try:
            os.rename(scratch / "layout", final)
        except OSError:  # a concurrent run finished first: same content
            pass
        print(f"built in {time.monotonic() - started:.1f}s", flush=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return final


USR_SHAPES = {
    # name: (every Nth non-directory entry of /usr kept, largest file kept, layers)
    "usr-1g": (2, 4 << 20, 5),
}


def cached_usr_layout(shape: str = "usr-1g", cache_dir: Path | None = None) -> Path:
    """An image of real-looking trees: this machine's /usr, sampled, in gzip layers.

    ``usr-1g``: every directory and every second other entry (files, symlinks,
    hardlinks) of a sorted walk of /usr, files above 4 MiB left out (~78k entries, ~1 GB
    on dev2), split in walk order into five layers of about equal size. Each layer
    carries the parent dirs of its entries, as a layer built by a Dockerfile step does.
    Headers are ustar with integer mtimes and PAX records only where ustar cannot hold a
    field (long or non-ASCII names), which is what Go's archive/tar writes for Docker,
    buildah and umoci; gzip -6 (pigz) as Go's default level. The tag is ``shape``.
    Built once under the temp dir (or ``cache_dir``) and renamed into place when complete.
    """
    nth, max_file, nlayers = USR_SHAPES[shape]
    # Bump the version when the generator changes: the key is not this file's hash, so
    # that editing other helpers here does not rebuild a 1 GB image.
    key = hashlib.sha256(f"v1:{nth}:{max_file}:{nlayers}".encode()).hexdigest()[:12]

    def build(layout: Path) -> None:
        entries = _sample_tree("/usr", nth, max_file)
        _write_tree_layout(layout, shape, _split_by_size(entries, nlayers))

    return _cached_layout(f"{shape}-{key}", f"{shape} image from /usr", build, cache_dir)


def _sample_tree(top: str, nth: int, max_file: int) -> list[tuple[str, int]]:
    """(path, bytes) in sorted walk order: every dir, every ``nth`` other entry."""
    out: list[tuple[str, int]] = []
    counter = 0
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        out.append((dirpath, 0))
        for name in sorted(filenames):
            path = os.path.join(dirpath, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            size = st.st_size if stat.S_ISREG(st.st_mode) else 0
            if size > max_file:
                continue
            counter += 1
            if counter % nth == 0:
                out.append((path, size))
    return out


def _split_by_size(entries: list[tuple[str, int]], parts: int) -> list[list[str]]:
    total = sum(size for _, size in entries) + 512 * len(entries)
    layers: list[list[str]] = [[]]
    filled = 0
    for path, size in entries:
        if filled >= total * len(layers) / parts and len(layers) < parts:
            layers.append([])
        layers[-1].append(path)
        filled += size + 512
    return layers


def _write_tree_layout(layout: Path, tag: str, layers: list[list[str]]) -> None:
    blob_dir = layout / "blobs" / "sha256"
    blob_dir.mkdir(parents=True)
    (layout / "oci-layout").write_text('{"imageLayoutVersion":"1.0.0"}')
    descs, diff_ids = [], []
    for paths in layers:
        plain = layout / "layer.tar"
        _write_tree_tar(plain, paths)
        with open(plain, "rb") as f:
            diff_ids.append("sha256:" + hashlib.file_digest(f, "sha256").hexdigest())
        subprocess.run(["pigz", "-6", "-n", "-f", str(plain)], check=True)
        zipped = plain.with_suffix(".tar.gz")
        with open(zipped, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        size = zipped.stat().st_size
        os.rename(zipped, blob_dir / digest)
        descs.append({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                      "digest": f"sha256:{digest}", "size": size})
    config = _put_json_blob(blob_dir, {
        "architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids}})
    manifest = _put_json_blob(blob_dir, {
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **config},
        "layers": descs})
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", **manifest,
        "annotations": {"org.opencontainers.image.ref.name": tag}}]}))


def _write_tree_tar(dest: Path, paths: list[str]) -> None:
    def whole_seconds(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.mtime = int(info.mtime)
        return info

    with tarfile.open(dest, "w", format=tarfile.PAX_FORMAT) as tf:
        present: set[str] = set()
        for path in paths:
            parents = []
            parent = os.path.dirname(path)
            while parent not in present and parent != "/":
                parents.append(parent)
                parent = os.path.dirname(parent)
            for p in [*reversed(parents), path]:
                if p not in present:
                    present.add(p)
                    tf.add(p, arcname=p.lstrip("/"), recursive=False, filter=whole_seconds)


def _put_json_blob(blob_dir: Path, doc: dict[str, object]) -> dict[str, object]:
    raw = json.dumps(doc).encode()
    digest = hashlib.sha256(raw).hexdigest()
    (blob_dir / digest).write_bytes(raw)
    return {"digest": f"sha256:{digest}", "size": len(raw)}


def layout_blobs(layout: Path, tag: str) -> dict[str, int]:
    """digest → size of the manifest, config and layers of ``tag`` in an OCI layout."""
    index = json.loads((layout / "index.json").read_bytes())
    desc = next(d for d in index["manifests"]
                if d.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag)
    manifest = json.loads((layout / "blobs" / "sha256" / desc["digest"][7:]).read_bytes())
    blobs = {desc["digest"]: desc["size"]}
    for blob in [manifest["config"], *manifest["layers"]]:
        blobs[blob["digest"]] = blob["size"]
    return blobs


def missing_blobs(blob_dir: Path, expected: dict[str, int]) -> list[str]:
    """Digests of ``expected`` absent from ``blob_dir`` (…/blobs/sha256) or of wrong size."""
    bad = []
    for digest, size in expected.items():
        path = blob_dir / digest.split(":", 1)[1]
        if not path.is_file() or path.stat().st_size != size:
            bad.append(digest)
    return bad


# Measuring ---------------------------------------------------------------------------
@dataclass
class Sample:
    wall: float  # seconds
    max_rss_kib: int
    returncode: int
    stderr_tail: str = ""


GNU_TIME = "/usr/bin/time"


def measure(cmd: Sequence[str], env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Sample:
    """Run ``cmd`` in a fresh process; wall time here, peak RSS from GNU time's %M.

    Not wait4 on a child of this interpreter: Linux carries the forked parent's RSS
    high-water mark across exec, so every child would report at least the driver's size.
    GNU time is a small C program, so its own share is ~1 MiB.
    """
    if not os.access(GNU_TIME, os.X_OK):
        raise RuntimeError(f"{GNU_TIME} missing: apt-get install time")
    with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile("r") as report:
        started = time.perf_counter()
        proc = subprocess.run([GNU_TIME, "-f", "%M", "-o", report.name, *cmd],
                              stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                              env=env, cwd=cwd)
        wall = time.perf_counter() - started
        err.seek(0)
        tail = err.read()[-2000:].decode(errors="replace")
        lines = [ln for ln in report.read().splitlines() if ln.strip()]
    max_rss = int(lines[-1]) if lines and lines[-1].strip().isdigit() else -1
    return Sample(wall, max_rss, proc.returncode, tail)


def drop_page_cache() -> bool:
    """Best effort (root only): start a run with cold caches."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


@dataclass
class Summary:
    name: str
    walls: list[float]
    rss_kib: list[int]

    @property
    def median_wall(self) -> float:
        return statistics.median(self.walls)

    @property
    def peak_rss_mib(self) -> float:
        return max(self.rss_kib) / 1024


def print_table(summaries: list[Summary], payload_bytes: int) -> None:
    print(f"{'tool':<14} {'median s':>9} {'min s':>7} {'max s':>7} {'MB/s':>7} "
          f"{'peak RSS MiB':>13}")
    for s in summaries:
        rate = payload_bytes / s.median_wall / 1e6
        print(f"{s.name:<14} {s.median_wall:9.2f} {min(s.walls):7.2f} {max(s.walls):7.2f} "
              f"{rate:7.1f} {s.peak_rss_mib:13.1f}")


# A private dockerd ---------------------------------------------------------------------
DOCKER_CLI = "/usr/bin/docker"  # Debian's docker.io client (API 1.41), as the tests use


def mounts_below(base: Path) -> list[str]:
    points = [line.split()[4].replace("\\040", " ")
              for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    return [p for p in points if p == str(base) or p.startswith(f"{base}/")]


def umount_below(base: Path) -> None:
    """Lazily unmount whatever is still mounted at or under ``base``, deepest first."""
    for point in reversed(mounts_below(base)):
        subprocess.run(["umount", "-l", point], check=False)


class PrivateDockerd:
    """Debian's dockerd with its own data root, exec root, pidfile, socket and containerd
    namespaces under ``base`` (keep it short: containerd's socket path must fit in
    sun_path), no iptables rules and no bridge, so it touches nothing of the host's; it
    runs containers with runc. close() stops it (SIGTERM, then SIGKILL to its process
    group) and unmounts what it left under ``base``."""

    def __init__(self, base: Path, storage_driver: str = "overlay2",
                 cli: str = DOCKER_CLI) -> None:
        self.dir = base
        self.dir.mkdir(parents=True, exist_ok=True)
        self.sock = self.dir / "d.sock"
        self.client = cli
        self.config = self.dir / "client"  # never the invoking user's ~/.docker
        self.config.mkdir(exist_ok=True)
        self.log = open(self.dir / "log", "wb")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            ["dockerd", "--iptables=false", "--ip6tables=false", "--bridge=none",
             f"--storage-driver={storage_driver}", f"--data-root={self.dir}/data",
             f"--exec-root={self.dir}/exec", f"--pidfile={self.dir}/d.pid",
             f"-H=unix://{self.sock}", "--containerd-namespace=ociimg-bench",
             "--containerd-plugins-namespace=ociimg-bench-p"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 60
        while subprocess.run([*self.cli(), "version"], capture_output=True,
                             env=self.env()).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                raise RuntimeError(f"dockerd did not start: see {self.dir / 'log'}")
            time.sleep(0.1)

    def cli(self) -> list[str]:
        return [self.client, "-H", f"unix://{self.sock}"]

    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_CONFIG": str(self.config)}

    def docker(self, *args: str) -> str:
        proc = subprocess.run([*self.cli(), *args], capture_output=True, text=True,
                              env=self.env())
        if proc.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} (dockerd): {proc.stderr.strip()}")
        return proc.stdout

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, 9)
                self.proc.wait()
        self.log.close()
        umount_below(self.dir)

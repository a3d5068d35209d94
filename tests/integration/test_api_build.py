"""POST /build and POST /commit through `ociimg serve`, driven by docker's CLI 20.10 (the
legacy builder: DOCKER_BUILDKIT=0) and docker-py; the images checked with ociimg itself
on the server's root."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer
from tests.integration.cli_helpers import ociimg

pytestmark = pytest.mark.integration

DOCKERFILE = """\
FROM busybox
ARG WHO=nobody
ENV GREETING=hello
RUN echo "$GREETING $WHO" > /greeting && echo built-by-run
COPY app/ /app/
CMD ["cat", "/greeting", "/app/a.txt"]
"""


def context(path: Path, dockerfile: str = DOCKERFILE, files: dict[str, str] | None = None,
            name: str = "Dockerfile") -> Path:
    path.mkdir(parents=True, exist_ok=True)
    (path / name).parent.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(dockerfile)
    for rel, text in ({"app/a.txt": "from-app\n"} if files is None else files).items():
        (path / rel).parent.mkdir(parents=True, exist_ok=True)
        (path / rel).write_text(text)
    return path


def run_image(api: ApiServer, image: str, *cmd: str) -> str:
    return ociimg(api.root, "run", "--rm", image, *cmd).stdout


def assert_no_build_leftovers(root: Path) -> None:
    containers = root / "containers"
    left = [p.name for p in containers.iterdir() if len(p.name) == 64] \
        if containers.is_dir() else []
    assert left == [], left
    active = root / "snapshots" / "active"
    left = [p.name for p in active.iterdir() if not p.name.startswith(".")] \
        if active.is_dir() else []
    assert left == [], left
    assert not list((root / "build-cache").glob(".api-*"))
    assert not list((root / "build-cache").glob(".work-*"))


def test_docker_build_runs_copies_and_tags(api: ApiServer, api_busybox: str,
                                           tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx")
    proc = api.docker("build", "-t", "x", "--build-arg", "WHO=world", str(ctx))
    out = proc.stdout
    assert "Step 1/6 : FROM busybox" in out
    assert "Step 4/6 : RUN" in out and "built-by-run" in out
    built = re.search(r"^Successfully built ([0-9a-f]{12})$", out, re.M)
    assert built, out
    assert "Successfully tagged x:latest" in out
    images = api.docker("images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}").stdout
    assert f"x:latest {built.group(1)}" in images.splitlines(), images
    # Run through the API too (attach is another endpoint's: the output from the log).
    cid = api.docker("run", "-d", "x").stdout.strip()
    assert api.docker("wait", cid).stdout.strip() == "0"
    assert ociimg(api.root, "logs", cid).stdout == "hello world\nfrom-app\n"
    api.docker("rm", cid)
    inspect = json.loads(ociimg(api.root, "inspect", "--json", "x").stdout)
    assert built.group(1) in json.dumps(inspect)
    assert_no_build_leftovers(api.root)


def test_dockerfile_flag_target_and_dockerignore(api: ApiServer, api_busybox: str,
                                                 tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx", "FROM busybox AS one\nRUN echo one > /stage\n"
                  "FROM one AS two\nCOPY . /ctx/\nRUN echo two > /stage\n",
                  {"keep.txt": "kept\n", "secret.key": "hidden\n", ".dockerignore": "*.key\n"},
                  name="build/Dockerfile.dev")
    api.docker("build", "-f", str(ctx / "build/Dockerfile.dev"), "--target", "one", "-t",
               "t1", str(ctx))
    assert run_image(api, "t1", "cat", "/stage") == "one\n"
    api.docker("build", "-f", str(ctx / "build/Dockerfile.dev"), "-t", "t2", str(ctx))
    listing = run_image(api, "t2", "ls", "-a", "/ctx")
    assert "keep.txt" in listing and "secret.key" not in listing
    assert run_image(api, "t2", "cat", "/stage") == "two\n"
    # -f outside the context: the CLI adds it to the context tar under its own name.
    outside = tmp_path / "Dockerfile.outside"
    outside.write_text("FROM busybox\nCOPY keep.txt /k\n")
    api.docker("build", "-f", str(outside), "-t", "t3", str(ctx))
    assert run_image(api, "t3", "cat", "/k") == "kept\n"
    api.docker("build", "--compress", "-f", str(outside), "-t", "t4", str(ctx))
    assert run_image(api, "t4", "cat", "/k") == "kept\n"


def test_failing_run_fails_the_cli_with_the_step_error(api: ApiServer, api_busybox: str,
                                                       tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx", "FROM busybox\nRUN echo about-to-fail; exit 3\n", {})
    proc = api.docker("build", "-t", "bad", str(ctx), check=False)
    assert proc.returncode == 3, proc
    assert "about-to-fail" in proc.stdout
    assert "exited with code 3" in proc.stderr + proc.stdout
    assert "bad" not in ociimg(api.root, "images").stdout
    assert_no_build_leftovers(api.root)


@pytest.mark.parametrize("dockerfile,needle", [
    ("FROM busybox\nNOPE x\n", "unknown instruction"),
    ("FROM busybox\nCOPY missing.txt /x\n", "missing.txt"),
])
def test_build_errors_in_stream(api: ApiServer, api_busybox: str, tmp_path: Path,
                                dockerfile: str, needle: str) -> None:
    ctx = context(tmp_path / "ctx", dockerfile, {})
    proc = api.docker("build", "-t", "bad", str(ctx), check=False)
    assert proc.returncode != 0
    assert needle in proc.stderr, proc
    assert "Traceback" not in proc.stderr + api.server_log()
    assert api.docker("version").returncode == 0


def test_quiet_prints_only_the_id(api: ApiServer, api_busybox: str, tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx")
    out = api.docker("build", "-q", "-t", "quiet", str(ctx)).stdout
    assert re.fullmatch(r"sha256:[0-9a-f]{64}\n", out), out
    inspect = json.loads(ociimg(api.root, "inspect", "--json", "quiet").stdout)
    assert out.strip()[7:19] in json.dumps(inspect)


def test_cached_rebuild_says_using_cache(api: ApiServer, api_busybox: str,
                                         tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx")
    first = api.docker("build", "-t", "c1", str(ctx)).stdout
    second = api.docker("build", "-t", "c2", str(ctx)).stdout
    assert "Using cache" in second and "\nbuilt-by-run\n" in first
    assert "\nbuilt-by-run\n" not in second
    ids = [re.search(r"Successfully built (\w+)", o).group(1) for o in (first, second)]  # type: ignore[union-attr]
    assert ids[0] == ids[1]


def test_docker_py_images_build(api: ApiServer, api_busybox: str, tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx")
    image, logs = api.client().images.build(path=str(ctx), tag="pyhigh:1",
                                            buildargs={"WHO": "high"})
    assert "pyhigh:1" in image.tags
    assert any("built-by-run" in chunk.get("stream", "") for chunk in logs)
    assert run_image(api, "pyhigh:1", "cat", "/greeting") == "hello high\n"
    import docker.errors
    bad = context(tmp_path / "bad", "FROM busybox\nRUN exit 7\n", {})
    with pytest.raises(docker.errors.BuildError) as info:
        api.client().images.build(path=str(bad), tag="pybad")
    assert "exited with code 7" in str(info.value)


def test_docker_py_build_returns_the_image_id_and_log(api: ApiServer, api_busybox: str,
                                                      tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx")
    client = api.client()
    chunks = list(client.api.build(path=str(ctx), tag="pyimg", decode=True,
                                   buildargs={"WHO": "py"}, labels={"made.by": "docker-py"}))
    streams = "".join(c.get("stream", "") for c in chunks)
    assert "built-by-run" in streams
    # docker-py's images.build finds the image by this line (models/images.py).
    ids = [m.group(2) for c in chunks if (m := re.search(
        r"(^Successfully built |sha256:)([0-9a-f]+)$", c.get("stream", "")))]
    assert ids, chunks
    aux = [c["aux"]["ID"] for c in chunks if "aux" in c]
    assert aux and aux[0].startswith("sha256:" + ids[-1])
    assert run_image(api, "pyimg", "cat", "/greeting") == "hello py\n"
    labels = json.loads(ociimg(api.root, "inspect", "--json", "pyimg").stdout)
    assert "docker-py" in json.dumps(labels)


def test_bad_parameters_are_400_before_the_stream(api: ApiServer, tmp_path: Path) -> None:
    client = api.client()
    import docker.errors
    ctx = context(tmp_path / "ctx", "FROM busybox\n", {})
    for kwargs in ({"network_mode": "container:x"}, {"platform": "nope/nope/nope/nope"},
                   {"buildargs": {"A": 1}}):
        with pytest.raises(docker.errors.APIError) as info:
            list(client.api.build(path=str(ctx), decode=True, **kwargs))
        assert info.value.status_code == 400, kwargs
    # What the clients refuse to send themselves.
    for query in ("t=UPPER/Case", "buildargs=%7Bnot-json", "remote=https://example.com/x.git"):
        status, body = raw_build(api, query, b"")
        assert status == 400 and json.loads(body)["message"], (query, body)
    assert_no_build_leftovers(api.root)


def raw_build(api: ApiServer, query: str, body: bytes,
              headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """A hand-made POST /build on the server's socket: (status, body)."""
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(120)
            self.sock.connect(str(api.socket))

    conn = UnixConnection("docker")
    try:
        conn.request("POST", f"/v1.41/build?{query}", body=body,
                     headers={"Content-Type": "application/x-tar", **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_registry_config_header_authenticates_from_pulls(api: ApiServer, tmp_path: Path,
                                                         auth_registry: object,
                                                         auth_pushed_busybox: str) -> None:
    import base64
    ctx = context(tmp_path / "ctx", f"FROM {auth_pushed_busybox}\nRUN echo pulled-ok\n", {})
    proc = api.docker("build", "-t", "authed", str(ctx), check=False)
    assert proc.returncode != 0 and "authentication required" in proc.stderr, proc
    registry = auth_pushed_busybox.split("/")[0]
    token = base64.b64encode(
        f"{auth_registry.username}:{auth_registry.password}".encode()).decode()  # type: ignore[attr-defined]
    # The CLI sends every credential of its config.json as X-Registry-Config.
    (api.home / "config.json").write_text(json.dumps({"auths": {registry: {"auth": token}}}))
    out = api.docker("build", "-t", "authed", str(ctx)).stdout
    assert "pulled-ok" in out and "Successfully tagged authed:latest" in out
    assert not list((api.root / "build-cache").glob(".api-*"))  # the auth file went too


def test_network_modes_and_cache_from(api: ApiServer, api_busybox: str,
                                      tmp_path: Path) -> None:
    ctx = context(tmp_path / "ctx", "FROM busybox\nRUN echo links: $(ls /sys/class/net)\n",
                  {})
    default = api.docker("build", "--no-cache", "--cache-from", "busybox", str(ctx)).stdout
    assert "warning: cachefrom is ignored" in default
    assert "\nlinks: lo\n" in default, default  # its own network namespace: loopback only
    none = api.docker("build", "--no-cache", "--network", "none", str(ctx)).stdout
    assert "\nlinks: lo\n" in none, none
    host = api.docker("build", "--no-cache", "--network", "host", str(ctx)).stdout
    links = next(line for line in host.splitlines() if line.startswith("links: ")).split()
    # The host's interface of its default route (others come and go on a shared host).
    with open("/proc/net/route") as f:
        default_if = next((row.split()[0] for row in f.readlines()[1:]
                           if row.split()[1] == "00000000"), "lo")
    assert default_if in links and len(links) > 1, (links, default_if)

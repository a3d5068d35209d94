"""docker cp, docker export, docker diff and docker commit through `ociimg serve` (archive
HEAD/GET/PUT, export, changes, /commit), driven by docker's CLI 20.10; the containers are
made with ociimg on the server's root, their images built through the API."""

from __future__ import annotations

import base64
import io
import json
import subprocess
import tarfile
from pathlib import Path

import pytest

from tests.integration.apiserver import DOCKER_CLI, ApiServer
from tests.integration.cli_helpers import ociimg
from tests.integration.test_api_build import context

pytestmark = pytest.mark.integration

FILES_IMAGE = """\
FROM busybox
RUN mkdir -p /data/sub && echo one > /data/a.txt && echo two > /data/sub/b.txt \\
    && ln -s /etc /data/hostetc && ln -s /etc/passwd /data/passwdlink \\
    && echo "container-marker:x:4242:4242::/:/bin/sh" >> /etc/passwd
"""
MARKER = "container-marker"


@pytest.fixture
def files_image(api: ApiServer, api_busybox: str, tmp_path: Path) -> str:
    api.docker("build", "-t", "files", str(context(tmp_path / "files-ctx", FILES_IMAGE, {})))
    return "files"


@pytest.fixture
def running(api: ApiServer, files_image: str) -> str:
    ociimg(api.root, "run", "-d", "--name", "live", files_image, "sleep", "600")
    return "live"


@pytest.fixture
def stopped(api: ApiServer, files_image: str) -> str:
    ociimg(api.root, "run", "--name", "done", files_image, "true")
    return "done"


def test_cp_out_file_dir_and_contents(api: ApiServer, running: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    api.docker("cp", f"{running}:/data/a.txt", str(out / "a-copy.txt"))
    assert (out / "a-copy.txt").read_text() == "one\n"
    api.docker("cp", f"{running}:/data", str(out / "tree"))
    assert (out / "tree/sub/b.txt").read_text() == "two\n"
    (out / "existing").mkdir()
    api.docker("cp", f"{running}:/data/.", str(out / "existing"))
    assert sorted(p.name for p in (out / "existing").iterdir()) == [
        "a.txt", "hostetc", "passwdlink", "sub"]
    api.docker("cp", f"{running}:/data/.", str(out / "fresh"))
    assert (out / "fresh/sub/b.txt").read_text() == "two\n"
    # A symlink is copied as one; followed (-L) inside the container, not on the host.
    api.docker("cp", f"{running}:/data/passwdlink", str(out / "link"))
    assert (out / "link").is_symlink()
    api.docker("cp", "-L", f"{running}:/data/passwdlink", str(out / "followed"))
    assert MARKER in (out / "followed").read_text()
    api.docker("cp", f"{running}:/data/hostetc/passwd", str(out / "through-dir-link"))
    assert MARKER in (out / "through-dir-link").read_text()
    assert MARKER not in Path("/etc/passwd").read_text()


def test_cp_in_stays_inside_the_container(api: ApiServer, running: str,
                                          tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "dir/deep").mkdir(parents=True)
    (src / "file.txt").write_text("host file\n")
    (src / "dir/deep/x.txt").write_text("x\n")
    name = f"ociimg-api-cp-{tmp_path.name}"
    (src / name).write_text("must stay in the container\n")
    api.docker("cp", str(src / "file.txt"), f"{running}:/data/")
    api.docker("cp", str(src / "dir"), f"{running}:/data/newdir")
    api.docker("cp", str(src / "dir") + "/.", f"{running}:/data/sub")
    # /data/hostetc is the container's /etc (a symlink inside it), never the host's.
    api.docker("cp", str(src / name), f"{running}:/data/hostetc/")
    api.docker("cp", str(src / name), f"{running}:/../../../../tmp/")

    def cat(path: str) -> str:
        return ociimg(api.root, "exec", running, "cat", path).stdout

    assert cat("/data/file.txt") == "host file\n"
    assert cat("/data/newdir/deep/x.txt") == "x\n"
    assert cat("/data/sub/deep/x.txt") == "x\n"
    assert cat(f"/etc/{name}") == "must stay in the container\n"
    assert cat(f"/tmp/{name}") == "must stay in the container\n"
    assert not Path(f"/etc/{name}").exists() and not Path(f"/tmp/{name}").exists()


def test_stopped_container_cp_diff_export_commit(api: ApiServer, stopped: str,
                                                 tmp_path: Path) -> None:
    note = tmp_path / "note.txt"
    note.write_text("copied while stopped\n")
    api.docker("cp", str(note), f"{stopped}:/data/note.txt")
    api.docker("cp", f"{stopped}:/data/note.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "copied while stopped\n"
    diff = api.docker("diff", stopped).stdout.splitlines()
    assert "A /data/note.txt" in diff and "C /data" in diff, diff
    proc = subprocess.run([DOCKER_CLI, "export", stopped], env=api.env(),
                          capture_output=True, timeout=300)
    assert proc.returncode == 0, (proc.stderr, api.server_log())
    with tarfile.open(fileobj=io.BytesIO(proc.stdout)) as tar:
        names = tar.getnames()
        assert "data/note.txt" in names and "bin/busybox" in names
        assert tar.extractfile("data/note.txt").read() == b"copied while stopped\n"  # type: ignore[union-attr]
    out = api.docker("commit", "-c", 'CMD ["cat", "/data/note.txt"]', "-m", "noted",
                     stopped, "img:1").stdout.strip()
    assert out.startswith("sha256:") and len(out) == 71, out
    assert ociimg(api.root, "run", "--rm", "img:1").stdout == "copied while stopped\n"
    history = ociimg(api.root, "history", "img:1").stdout
    assert "noted" in history


def test_docker_py_archive_stat_and_errors(api: ApiServer, running: str) -> None:
    import docker.errors
    low = api.client().api
    stream, stat = low.get_archive(running, "/data/hostetc")
    b"".join(stream)
    assert stat["name"] == "hostetc" and stat["linkTarget"] == "/etc"
    assert stat["mode"] & (1 << 27) and stat["mode"] & 0o777 == 0o777
    _, stat = low.get_archive(running, "/data/sub")
    assert stat["mode"] & (1 << 31) and stat["mtime"].endswith("Z")
    with pytest.raises(docker.errors.NotFound) as info:
        low.get_archive(running, "/nope")
    assert f"Could not find the file /nope in container {running}" in str(info.value)
    # path= is resolved inside the container: "../.." stops at its root.
    stream, stat = low.get_archive(running, "../../../etc/passwd")
    with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as tar:
        assert MARKER.encode() in tar.extractfile("passwd").read()  # type: ignore[union-attr]
    assert low.put_archive(running, "/data", tar_of([("new.txt", b"new", "f")]))
    ociimg(api.root, "exec", running, "rm", "/data/a.txt")
    changes = low.diff(running)
    assert {"Path": "/data/new.txt", "Kind": 1} in changes
    assert {"Path": "/data/a.txt", "Kind": 2} in changes
    assert {"Path": "/data", "Kind": 0} in changes


def put_archive(api: ApiServer, container: str, path: str, body: bytes,
                query: str = "") -> tuple[int, bytes]:
    import http.client
    import socket
    import urllib.parse

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.settimeout(120)
            self.sock.connect(str(api.socket))

    conn = UnixConnection("docker")
    try:
        conn.request("PUT", f"/v1.41/containers/{container}/archive?path="
                     f"{urllib.parse.quote(path)}{query}", body=body,
                     headers={"Content-Type": "application/x-tar"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def tar_of(entries: list[tuple[str, bytes, str]]) -> bytes:
    """(name, data, kind) with kind "f" file, "d" dir, "s:TARGET" symlink, "h:TARGET"
    hardlink."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, kind in entries:
            info = tarfile.TarInfo(name)
            info.mode = 0o644
            if kind == "d":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
            elif kind.startswith("s:"):
                info.type, info.linkname = tarfile.SYMTYPE, kind[2:]
            elif kind.startswith("h:"):
                info.type, info.linkname = tarfile.LNKTYPE, kind[2:]
            info.size = len(data) if info.type == tarfile.REGTYPE else 0
            tar.addfile(info, io.BytesIO(data) if info.type == tarfile.REGTYPE else None)
    return buf.getvalue()


def host_state() -> dict[str, bytes]:
    return {p: Path(p).read_bytes() for p in ("/etc/passwd", "/etc/hostname")}


@pytest.mark.parametrize("path,entries", [
    ("/data", [("../../../../../tmp/{mark}", b"x", "f")]),
    ("/data", [("/tmp/{mark}", b"x", "f")]),
    ("/data", [("up", b"", "s:../../../../../../tmp"), ("up/{mark}", b"x", "f")]),
    ("/data", [("abs", b"", "s:/tmp"), ("abs/{mark}", b"x", "f")]),
    ("/data", [("hard", b"", "h:/etc/passwd")]),
    ("/data", [("hard", b"", "h:../../../../etc/passwd"), ("hard", b"overwrite", "f")]),
    ("../../../../tmp", [("{mark}", b"x", "f")]),
    ("/data/hostetc", [("{mark}", b"x", "f")]),
], ids=["dotdot", "absolute", "symlink-up", "symlink-abs", "hardlink-abs",
        "hardlink-up-overwrite", "path-dotdot", "path-through-link"])
def test_hostile_put_archive_changes_nothing_outside(api: ApiServer, running: str,
                                                     tmp_path: Path, path: str,
                                                     entries: list) -> None:
    mark = f"ociimg-api-put-{tmp_path.name}"
    before = host_state()
    body = tar_of([(n.format(mark=mark), d, k) for n, d, k in entries])
    status, answer = put_archive(api, running, path, body, "&noOverwriteDirNonDir=true")
    assert status in (200, 400, 404), answer
    if status != 200:
        assert json.loads(answer)["message"]
    assert not Path(f"/tmp/{mark}").exists() and not Path(f"/etc/{mark}").exists()
    assert host_state() == before
    assert api.docker("version").returncode == 0


def test_put_archive_follows_docker_cp_rules(api: ApiServer, running: str) -> None:
    status, answer = put_archive(api, running, "/", tar_of([("data", b"x", "f")]),
                                 "&noOverwriteDirNonDir=true")
    assert status == 400 and b"cannot overwrite directory" in answer
    status, answer = put_archive(api, running, "/data", tar_of([("a.txt", b"", "d")]),
                                 "&noOverwriteDirNonDir=true")
    assert status == 400 and b"cannot overwrite non-directory" in answer
    status, answer = put_archive(api, running, "/data/a.txt", tar_of([("x", b"x", "f")]))
    assert status == 400 and b"extraction point is not a directory" in answer
    status, answer = put_archive(api, running, "/nowhere", tar_of([("x", b"x", "f")]))
    assert status == 404 and b"Could not find the file /nowhere" in answer
    status, answer = put_archive(api, running, "/data", tar_of([(".wh.a.txt", b"", "f")]))
    assert status == 400
    assert ociimg(api.root, "exec", running, "cat", "/data/a.txt").stdout == "one\n"
    status, _ = put_archive(api, running, "/data", b"not a tar at all" * 100)
    assert status == 400
    assert not list((api.root / "build-cache").glob(".api-put-*"))


def test_stat_header_is_base64_json(api: ApiServer, running: str) -> None:
    import http.client
    import socket

    class UnixConnection(http.client.HTTPConnection):
        def connect(self) -> None:
            self.sock = socket.socket(socket.AF_UNIX)
            self.sock.connect(str(api.socket))

    conn = UnixConnection("docker")
    conn.request("HEAD", f"/v1.41/containers/{running}/archive?path=/data/a.txt")
    response = conn.getresponse()
    response.read()
    conn.close()
    assert response.status == 200
    doc = json.loads(base64.b64decode(response.headers["X-Docker-Container-Path-Stat"]))
    assert doc["name"] == "a.txt" and doc["size"] == 4 and doc["mode"] == 0o644
    assert doc["linkTarget"] == ""


def test_docker_py_commit_with_a_config_body(api: ApiServer, stopped: str) -> None:
    low = api.client().api
    answer = low.commit(stopped, repository="pycommit", tag="2", message="from docker-py",
                        author="tester", conf={"Cmd": ["sh", "-c", "echo $GREETING"],
                                               "Env": ["GREETING=hi there"],
                                               "Labels": {"made.by": "docker-py"},
                                               "WorkingDir": "/data"})
    assert answer["Id"].startswith("sha256:")
    assert ociimg(api.root, "run", "--rm", "pycommit:2").stdout == "hi there\n"
    inspect = json.loads(ociimg(api.root, "inspect", "--json", "pycommit:2").stdout)
    text = json.dumps(inspect)
    assert answer["Id"][7:] in text and "docker-py" in text and '"/data"' in text
    import docker.errors
    with pytest.raises(docker.errors.NotFound):
        low.commit("no-such-container", repository="x")


def test_server_stops_while_a_client_never_reads_an_export(api: ApiServer,
                                                           running: str) -> None:
    import socket
    with socket.socket(socket.AF_UNIX) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(str(api.socket))
        sock.sendall(f"GET /v1.41/containers/{running}/export HTTP/1.1\r\n"
                     "Host: docker\r\n\r\n".encode())
        assert sock.recv(64).startswith(b"HTTP/1.1 200")
        # The export now waits on a full socket buffer; the server must still stop.
        assert api.stop() == 0


def test_cp_into_a_created_container_before_its_start(api: ApiServer, api_busybox: str,
                                                      tmp_path: Path) -> None:
    # What testcontainers and compose do: create, copy a file in, then start.
    (tmp_path / "conf.txt").write_text("configured before start\n")
    cid = api.docker("create", "busybox", "cat", "/etc/conf.txt").stdout.strip()
    api.docker("cp", str(tmp_path / "conf.txt"), f"{cid}:/etc/conf.txt")
    assert "A /etc/conf.txt" in api.docker("diff", cid).stdout.splitlines()
    api.docker("start", cid)
    assert api.docker("wait", cid).stdout.strip() == "0"
    assert ociimg(api.root, "logs", cid).stdout == "configured before start\n"
    api.docker("cp", f"{cid}:/etc/conf.txt", str(tmp_path / "back.txt"))
    assert (tmp_path / "back.txt").read_text() == "configured before start\n"


def test_cp_reaches_volumes_and_bind_mounts(api: ApiServer, api_busybox: str,
                                            tmp_path: Path) -> None:
    # The rootfs holds only the empty mount points: cp must use what the container sees.
    bound = tmp_path / "bound"
    (bound / "sub").mkdir(parents=True)
    (bound / "sub/in-bind.txt").write_text("from the host dir\n")
    readonly = tmp_path / "readonly"
    readonly.mkdir()
    cid = api.docker("run", "-d", "-v", "cpvol:/vol", "-v", f"{bound}:/b",
                     "-v", f"{readonly}:/ro:ro", "busybox", "sleep", "600").stdout.strip()
    note = tmp_path / "note.txt"
    note.write_text("into the volume\n")
    api.docker("cp", str(note), f"{cid}:/vol/note.txt")
    assert ociimg(api.root, "exec", cid, "cat", "/vol/note.txt").stdout == "into the volume\n"
    api.docker("cp", str(note), f"{cid}:/b/sub/")
    assert (bound / "sub/note.txt").read_text() == "into the volume\n"
    api.docker("cp", f"{cid}:/b/sub/.", str(tmp_path / "out"))
    assert (tmp_path / "out/in-bind.txt").read_text() == "from the host dir\n"
    assert api.docker("cp", f"{cid}:/vol/note.txt", "-").returncode == 0
    proc = api.docker("cp", str(note), f"{cid}:/ro/", check=False)
    assert proc.returncode != 0 and "read-only" in proc.stderr, proc
    assert list(readonly.iterdir()) == []
    # A symlink in the volume to "/etc" leads to the volume's own etc, not the host's.
    ociimg(api.root, "exec", cid, "sh", "-c", "ln -s /etc /vol/esc && mkdir /vol/etc")
    mark = f"ociimg-api-vol-{tmp_path.name}"
    (tmp_path / mark).write_text("stays in the volume\n")
    before = host_state()
    api.docker("cp", str(tmp_path / mark), f"{cid}:/vol/esc/", check=False)
    assert not Path(f"/etc/{mark}").exists() and host_state() == before
    api.docker("rm", "-f", cid)
    api.docker("volume", "rm", "cpvol")

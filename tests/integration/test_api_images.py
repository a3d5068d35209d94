"""Image endpoints of `ociimg serve` driven by the docker CLI 20.10 and docker-py: images,
inspect, history, tag, rmi, image prune, save | load."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.apiserver import ApiServer, start_server, stop_server

pytestmark = pytest.mark.integration


def ociimg(server: ApiServer, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "ociimg", "--root", str(server.root), *args],
                          env={**server.env()}, check=True, capture_output=True, text=True,
                          timeout=120).stdout


def store_names(server: ApiServer) -> set[str]:
    index = server.root / "store" / "index.json"
    doc = json.loads(index.read_text()) if index.exists() else {"manifests": []}
    return {m.get("annotations", {}).get("org.opencontainers.image.ref.name", "")
            for m in doc["manifests"]}


def test_docker_images_lists_familiar_names(api: ApiServer, api_busybox: str) -> None:
    api.docker("tag", "busybox", "127.0.0.1:5999/team/app:1")
    api.docker("tag", "busybox", "someone/tool:2")
    out = api.docker("images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}").stdout
    rows = sorted(line.split() for line in out.splitlines())
    image_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    assert image_id.startswith("sha256:")
    short = image_id.removeprefix("sha256:")[:12]
    assert rows == [["127.0.0.1:5999/team/app", "1", short], ["busybox", "latest", short],
                    ["someone/tool", "2", short]]
    # The store keeps the full names; the API shows docker's.
    assert "docker.io/library/busybox:latest" in store_names(api)
    assert "docker.io/someone/tool:2" in store_names(api)
    quiet = api.docker("images", "-q", "--no-trunc").stdout.split()
    assert set(quiet) == {image_id}
    digests = api.docker("images", "--digests", "--format", "{{.Repository}} {{.Digest}}",
                         "busybox").stdout.split()
    assert digests[0] == "busybox" and digests[1].startswith("sha256:")


def test_images_filters(api: ApiServer, api_busybox: str) -> None:
    api.docker("tag", "busybox", "other/name:x")
    by_ref = api.docker("images", "--filter", "reference=busybox", "--format",
                        "{{.Repository}}").stdout.split()
    assert by_ref == ["busybox"]
    by_ref = api.docker("images", "--filter", "reference=other/*:x", "--format",
                        "{{.Repository}}:{{.Tag}}").stdout.split()
    assert by_ref == ["other/name:x"]
    assert api.docker("images", "-q", "--filter", "dangling=true").stdout.strip() == ""
    assert api.docker("images", "-q", "--filter", "label=no.such=label").stdout.strip() == ""
    image_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    for value in ("busybox", image_id, image_id[7:19]):
        assert api.docker("images", "-q", "--filter", f"before={value}").stdout.strip() == ""
        assert api.docker("images", "-q", "--filter", f"since={value}").stdout.strip() == ""
    bad = api.docker("images", "--filter", "nonsense=1", check=False)
    assert bad.returncode != 0 and "nonsense" in bad.stderr
    # docker-py sends the legacy list form of the filters.
    client = api.client()
    listed = client.api.images(filters={"reference": "other/*"})
    assert [i["RepoTags"] for i in listed] == [["other/name:x"]]
    assert len(client.images.list(filters={"dangling": False})) == 1


def test_inspect_shape_and_name_forms(api: ApiServer, api_busybox: str) -> None:
    doc = json.loads(api.docker("inspect", "--type", "image", "busybox").stdout)[0]
    image_id = doc["Id"]
    assert doc["RepoTags"] == ["busybox:latest"]
    assert doc["RepoDigests"][0].startswith("busybox@sha256:")
    assert doc["Config"]["Cmd"] and "Env" in doc["Config"] and "Volumes" in doc["Config"]
    assert "Volumes" in doc["ContainerConfig"]  # compose 1.29 reads it (trap 16)
    assert doc["RootFS"]["Type"] == "layers" and doc["RootFS"]["Layers"][0].startswith("sha256:")
    assert doc["Os"] == "linux" and doc["Size"] > 0 and doc["GraphDriver"]["Name"] == "overlay2"
    assert doc["Created"].endswith("Z") or "+" in doc["Created"]
    repo_digest = doc["RepoDigests"][0]
    for name in ("busybox:latest", "docker.io/library/busybox", image_id,
                 image_id.removeprefix("sha256:")[:12], repo_digest):
        got = api.docker("image", "inspect", "-f", "{{.Id}}", name).stdout.strip()
        assert got == image_id, name
    missing = api.docker("image", "inspect", "nosuch:1", check=False)
    assert missing.returncode == 1 and "No such image: nosuch:1" in missing.stderr
    image = api.client().images.get("busybox")
    assert image.id == image_id and image.tags == ["busybox:latest"]


def test_history_newest_first(api: ApiServer, api_busybox: str) -> None:
    rows = [json.loads(line) for line in api.docker(
        "history", "--no-trunc", "--format", "{{json .}}", "busybox").stdout.splitlines()]
    image_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    assert rows[0]["ID"] == image_id
    assert all(r["ID"] == "<missing>" for r in rows[1:])
    history = api.client().images.get("busybox").history()
    assert history[0]["Tags"] == ["busybox:latest"] and history[0]["Size"] > 0


def test_rmi_untags_then_deletes_and_refuses_in_use(api: ApiServer, api_busybox: str) -> None:
    api.docker("tag", "busybox", "second:1")
    out = api.docker("rmi", "second:1").stdout
    assert out.strip() == "Untagged: second:1"
    image_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    # A container made from the image: its last name cannot go without force.
    cid = api.docker("create", "--name", "user1", "busybox", "true").stdout.strip()
    refused = api.docker("rmi", "busybox", check=False)
    assert refused.returncode == 1
    assert "conflict: unable to remove repository reference \"busybox\" (must force) - " \
           f"container {cid[:12]} " in refused.stderr
    assert f"is using its referenced image {image_id.removeprefix('sha256:')[:12]}" in \
        refused.stderr
    api.docker("rm", "-f", "user1")
    out = api.docker("rmi", "busybox").stdout.splitlines()
    assert out == ["Untagged: busybox:latest", f"Deleted: {image_id}"]
    assert api.docker("images", "-q").stdout.strip() == ""
    assert not (api.root / "store" / "blobs" / "sha256" / image_id.removeprefix(
        "sha256:")).exists()  # gc ran: the config blob is gone


def test_rmi_by_id_with_two_names_needs_force(api: ApiServer, api_busybox: str) -> None:
    api.docker("tag", "busybox", "second:1")
    image_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    refused = api.docker("rmi", image_id[7:19], check=False)
    assert refused.returncode == 1 and "referenced in multiple repositories" in refused.stderr
    out = api.docker("rmi", "-f", image_id[7:19]).stdout.splitlines()
    assert sorted(out) == sorted(["Untagged: busybox:latest", "Untagged: second:1",
                                  f"Deleted: {image_id}"])
    assert api.client().images.list() == []


def test_image_prune_removes_dangling_only_by_default(api: ApiServer, api_busybox: str,
                                                      fixture_layout: Path,
                                                      tmp_path: Path) -> None:
    api.load_image(fixture_layout, "multilayer", "docker.io/library/multi:1")
    multi_id = api.docker("inspect", "-f", "{{.Id}}", "multi:1").stdout.strip()
    busybox_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    # Saved by Id, the archive names no image: loaded back, the image is dangling.
    archive = tmp_path / "unnamed.tar"
    api.docker("save", "-o", str(archive), multi_id)
    api.docker("rmi", "multi:1")
    out = api.docker("load", "-i", str(archive)).stdout
    assert out.strip() == f"Loaded image ID: {multi_id}"
    dangling = api.docker("images", "-q", "--no-trunc", "--filter", "dangling=true").stdout
    assert dangling.split() == [multi_id]
    listed = api.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split()
    assert sorted(listed) == ["<none>:<none>", "busybox:latest"]
    out = api.docker("image", "prune", "-f").stdout
    assert f"deleted: {multi_id}" in out and "Total reclaimed space" in out
    assert api.docker("images", "-q", "--no-trunc").stdout.split() == [busybox_id]
    # dangling=false: every image no container uses.
    result = api.client().images.prune(filters={"dangling": False})
    assert {"Untagged": "busybox:latest"} in result["ImagesDeleted"]
    assert {"Deleted": busybox_id} in result["ImagesDeleted"]
    assert result["SpaceReclaimed"] > 0
    assert api.docker("images", "-q").stdout.strip() == ""


def test_save_load_round_trip_to_a_second_server(api: ApiServer, api_busybox: str,
                                                 tmp_path: Path) -> None:
    archive = tmp_path / "busybox.tar"
    api.docker("tag", "busybox", "127.0.0.1:5999/other:1")
    api.docker("save", "-o", str(archive), "busybox", "127.0.0.1:5999/other:1")
    image_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    (tmp_path / "second").mkdir()
    second = start_server(tmp_path / "second", tmp_path / "second-root")
    try:
        out = second.docker("load", "-i", str(archive)).stdout
        assert sorted(out.splitlines()) == ["Loaded image: 127.0.0.1:5999/other:1",
                                            "Loaded image: busybox:latest"]
        assert second.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip() == image_id
        assert "docker.io/library/busybox" in ociimg(second, "images")
    finally:
        stop_server(second)
    # And through a pipe, into the first one after a rmi.
    api.docker("rmi", "busybox", "127.0.0.1:5999/other:1")
    piped = api.docker("load", input=archive.read_bytes()).stdout
    assert b"Loaded image: busybox:latest" in piped


def test_docker_py_save_and_load(api: ApiServer, api_busybox: str) -> None:
    client = api.client()
    image = client.images.get("busybox")
    data = b"".join(image.save(named=True))
    client.images.remove("busybox")
    loaded = client.images.load(data)
    assert [i.id for i in loaded] == [image.id]
    assert loaded[0].tags == ["busybox:latest"]


def test_prune_until_and_label_filters(api: ApiServer, api_busybox: str) -> None:
    client = api.client()
    for until in ("1", "2001-01-01T00:00:00Z", "1h"):  # the fixture was made long before 1h ago
        result = client.images.prune(filters={"dangling": False, "until": until,
                                              "label": "no.such"})
        assert result["ImagesDeleted"] is None, until
    bad = api.docker("image", "prune", "-a", "-f", "--filter", "until=yesterday", check=False)
    assert bad.returncode == 1 and "invalid value for until" in bad.stderr
    assert api.docker("images", "-q").stdout.strip() != ""
    result = client.images.prune(filters={"dangling": False, "until": "1h"})
    assert len(result["ImagesDeleted"]) == 2


def test_listing_follows_every_change(api: ApiServer, api_busybox: str) -> None:
    """The server reuses its listing while index.json is unchanged: every tag, untag and
    change by another process (the ociimg CLI) shows at once."""
    def names() -> list[str]:
        return sorted(api.docker("images", "--format", "{{.Repository}}:{{.Tag}}").stdout.split())

    assert names() == ["busybox:latest"]
    for i in range(3):  # same-length names, back to back
        api.docker("tag", "busybox", f"n{i}:1")
        assert names() == sorted(["busybox:latest", *(f"n{j}:1" for j in range(i + 1))])
    api.docker("rmi", "n0:1")
    ociimg(api, "tag", "busybox", "n9:1")
    assert names() == ["busybox:latest", "n1:1", "n2:1", "n9:1"]


def test_unsupported_and_missing_answer_like_dockerd(api: ApiServer, tmp_path: Path) -> None:
    search = api.docker("search", "busybox", check=False)
    assert search.returncode == 1
    assert "search is not supported by ociimg serve" in search.stderr
    rootfs = tmp_path / "rootfs.tar"
    rootfs.write_bytes(bytes(10240))
    imported = api.docker("import", str(rootfs), "imported:1", check=False)
    assert imported.returncode == 1 and "docker import" in imported.stderr
    assert "not supported" in imported.stderr
    missing = api.docker("rmi", "nosuch:1", check=False)
    assert missing.returncode == 1 and "No such image: nosuch:1" in missing.stderr
    assert api.docker("history", "nosuch", check=False).returncode == 1
    assert api.docker("save", "nosuch", check=False).returncode == 1
    assert api.docker("images", "-q").stdout.strip() == ""


def test_rmi_while_a_container_is_being_created(api: ApiServer, api_busybox: str) -> None:
    """gc needs the containers' lock exclusively; while a create holds it, rmi still
    untags and deletes (the space is reclaimed by a later gc), never a 500."""
    from ociimg.containers.store import containers_locked

    image_id = api.docker("inspect", "-f", "{{.Id}}", "busybox").stdout.strip()
    config_blob = api.root / "store" / "blobs" / "sha256" / image_id.removeprefix("sha256:")
    (api.root / "containers").mkdir(exist_ok=True)
    with containers_locked(api.root, shared=True):
        out = api.docker("rmi", "busybox").stdout.splitlines()
    assert out == ["Untagged: busybox:latest", f"Deleted: {image_id}"]
    assert config_blob.exists()  # not collected yet
    ociimg(api, "gc")
    assert not config_blob.exists()

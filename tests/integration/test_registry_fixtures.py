"""The registry fixtures serve real distribution-spec registries (checked with plain HTTP)."""

from __future__ import annotations

import requests

ACCEPT = ", ".join([
    "application/vnd.oci.image.index.v1+json", "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
])


def test_plain_registry_answers_v2(registry) -> None:
    assert registry.host.startswith("127.0.0.1:") and registry.url == f"http://{registry.host}"
    assert requests.get(f"{registry.url}/v2/", timeout=5).status_code == 200


def test_auth_registry_demands_basic_credentials(auth_registry) -> None:
    resp = requests.get(f"{auth_registry.url}/v2/", timeout=5)
    assert resp.status_code == 401
    assert resp.headers["WWW-Authenticate"].lower().startswith("basic ")
    wrong = requests.get(f"{auth_registry.url}/v2/", auth=(auth_registry.username, "nope"),
                         timeout=5)
    assert wrong.status_code == 401
    ok = requests.get(f"{auth_registry.url}/v2/",
                      auth=(auth_registry.username, auth_registry.password), timeout=5)
    assert ok.status_code == 200


def test_pushed_fixtures_keep_their_digests(pushed_fixtures, fixture_layout, registry) -> None:
    import json

    index = json.loads((fixture_layout / "index.json").read_bytes())
    expected = {d["annotations"]["org.opencontainers.image.ref.name"]: d
                for d in index["manifests"]}
    assert set(pushed_fixtures) == set(expected)
    for tag, ref in pushed_fixtures.items():
        host, rest = ref.split("/", 1)
        repo, _, ref_tag = rest.rpartition(":")
        assert host == registry.host and ref_tag == "latest"
        resp = requests.get(f"{registry.url}/v2/{repo}/manifests/latest",
                            headers={"Accept": ACCEPT}, timeout=5)
        assert resp.status_code == 200, (tag, resp.text)
        # skopeo pushed the bytes unchanged: pull tests can compare against the layout.
        assert resp.headers["Docker-Content-Digest"] == expected[tag]["digest"]
        assert resp.headers["Content-Type"] == expected[tag]["mediaType"]


def test_auth_pushed_busybox_needs_credentials(auth_pushed_busybox, auth_registry,
                                               fixture_layout) -> None:
    import json

    repo = auth_pushed_busybox.split("/", 1)[1].rsplit(":", 1)[0]
    url = f"{auth_registry.url}/v2/{repo}/manifests/latest"
    assert requests.get(url, headers={"Accept": ACCEPT}, timeout=5).status_code == 401
    resp = requests.get(url, headers={"Accept": ACCEPT}, timeout=5,
                        auth=(auth_registry.username, auth_registry.password))
    assert resp.status_code == 200
    index = json.loads((fixture_layout / "index.json").read_bytes())
    busybox = next(d for d in index["manifests"]
                   if d["annotations"]["org.opencontainers.image.ref.name"] == "busybox")
    assert resp.headers["Docker-Content-Digest"] == busybox["digest"]


def test_registry_deletes_are_enabled(pushed_fixtures, registry) -> None:
    # Push and GC tests rely on DELETE working (storage.delete.enabled in our config).
    # distribution checks storage.delete.enabled before looking the digest up: a digest
    # nothing is stored under answers 404 when deletes are on, 405 UNSUPPORTED when off.
    repo = pushed_fixtures["busybox"].split("/", 1)[1].rsplit(":", 1)[0]
    missing = "sha256:" + "0" * 64
    resp = requests.delete(f"{registry.url}/v2/{repo}/manifests/{missing}", timeout=5)
    assert resp.status_code == 404, resp.text


def skopeo_inspect(ref: str, *extra: str) -> dict:
    import json
    import subprocess

    out = subprocess.run(["skopeo", *extra, "inspect", "--tls-verify=false", f"docker://{ref}"],
                         check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def test_multiarch_selects_per_platform_in_skopeo(pushed_fixtures) -> None:
    # A reference client picks the right entry of our index for each platform.
    from tests.conftest import load_build_images

    host = load_build_images().host_arch()
    ref = pushed_fixtures["multiarch"]
    assert skopeo_inspect(ref)["Architecture"] == host
    other = "amd64" if host == "arm64" else "arm64"
    variant = ["--override-variant", "v8"] if other == "arm64" else []
    marker = skopeo_inspect(ref, "--override-arch", other, *variant)
    assert marker["Architecture"] == other and marker["Labels"]["fixture.arch"] == other
    docker_v2 = skopeo_inspect(pushed_fixtures["docker-v2"])
    assert docker_v2["Architecture"] == host and docker_v2["Env"][0].startswith("PATH=")

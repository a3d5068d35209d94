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

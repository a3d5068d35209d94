"""auth: WWW-Authenticate parsing, the token flow, realm checks, auth files, login."""

from __future__ import annotations

import base64
import json
import os
import stat
from pathlib import Path

import pytest
from pytest_httpserver import HTTPServer
from werkzeug import Response

from ociimg.errors import InvalidDocument, RegistryError, Unauthorized
from ociimg.registry.auth import (
    Authenticator,
    Challenge,
    Credentials,
    check_realm,
    find_credentials,
    login,
    logout,
    normalize_auth_key,
    parse_www_authenticate,
)
from ociimg.registry.client import RegistryClient
from ociimg.registry.transport import Transport, TransportOptions

# WWW-Authenticate ---------------------------------------------------------------
PARSE_TABLE = [
    ('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",'
     'scope="repository:library/busybox:pull"',
     [Challenge("bearer", {"realm": "https://auth.docker.io/token",
                           "service": "registry.docker.io",
                           "scope": "repository:library/busybox:pull"})]),
    # The comma inside the quoted scope is not a separator (Azure/azure-sdk-for-js#20898).
    ('Bearer realm="https://r/token",scope="repository:a/b:pull,push",error="insufficient_scope"',
     [Challenge("bearer", {"realm": "https://r/token", "scope": "repository:a/b:pull,push",
                           "error": "insufficient_scope"})]),
    # Escaped quote and backslash inside a quoted-string.
    (r'Basic realm="say \"hi\" \\ there"',
     [Challenge("basic", {"realm": 'say "hi" \\ there'})]),
    # Several challenges in one header, odd whitespace, tokens instead of quoted strings.
    ('Basic realm="Registry Realm" ,  Bearer realm=https://t/x , service=svc',
     [Challenge("basic", {"realm": "Registry Realm"}),
      Challenge("bearer", {"realm": "https://t/x", "service": "svc"})]),
    # Case-insensitive scheme and parameter names.
    ('BEARER Realm="x",SERVICE="y"', [Challenge("bearer", {"realm": "x", "service": "y"})]),
    # token68 forms and bare schemes.
    ("Negotiate abc123==, Basic", [Challenge("negotiate", {}, "abc123=="), Challenge("basic")]),
    ("", []),
    ('Bearer realm="a,b", Basic realm="c"',
     [Challenge("bearer", {"realm": "a,b"}), Challenge("basic", {"realm": "c"})]),
]


@pytest.mark.parametrize("header, expected", PARSE_TABLE)
def test_parse_www_authenticate(header, expected):
    assert parse_www_authenticate(header) == expected


def test_parse_unterminated_quote_is_an_error():
    with pytest.raises(InvalidDocument, match="unterminated"):
        parse_www_authenticate('Bearer realm="oops')


# Realm checks (SSRF) ------------------------------------------------------------
@pytest.mark.parametrize("realm, registry_url, ok", [
    ("https://auth.docker.io/token", "https://registry-1.docker.io", True),
    ("http://127.0.0.1:5000/token", "http://127.0.0.1:5000", True),
    ("http://169.254.169.254/latest/meta-data", "https://registry.example.com", False),
    ("http://127.0.0.1:5001/token", "http://127.0.0.1:5000", False),
    ("file:///etc/passwd", "https://registry.example.com", False),
    ("gopher://x/", "https://registry.example.com", False),
    ("/token", "https://registry.example.com", False),
])
def test_realm_must_be_https_or_same_host(realm, registry_url, ok):
    if ok:
        check_realm(realm, registry_url)
    else:
        with pytest.raises(RegistryError):
            check_realm(realm, registry_url)


# Token flow against a fake registry ----------------------------------------------
def transport() -> Transport:
    return Transport(TransportOptions(backoff_base=0.0, retries=1), sleep=lambda s: None)


def client_for(server: HTTPServer, creds: Credentials | None = None) -> RegistryClient:
    t = transport()
    base = f"http://{server.host}:{server.port}"
    return RegistryClient(f"{server.host}:{server.port}", t, Authenticator(base, t, creds))


def bearer(server: HTTPServer, scope: str, error: str | None = None) -> str:
    extra = f',error="{error}"' if error else ""
    return (f'Bearer realm="{server.url_for("/token")}",service="test-registry",'
            f'scope="{scope}"{extra}')


MANIFEST = json.dumps({"schemaVersion": 2,
                       "mediaType": "application/vnd.oci.image.manifest.v1+json",
                       "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                  "digest": "sha256:" + "a" * 64, "size": 2},
                       "layers": []}).encode()
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"


def serve_protected_manifest(server: HTTPServer, token: str) -> None:
    server.expect_request("/v2/lib/app/manifests/v1",
                          headers={"Authorization": f"Bearer {token}"}).respond_with_data(
        MANIFEST, content_type=OCI_MANIFEST)
    server.expect_request("/v2/lib/app/manifests/v1").respond_with_data(
        "", status=401,
        headers={"WWW-Authenticate": bearer(server, "repository:lib/app:pull")})


def token_requests(server: HTTPServer) -> list:
    return [req for req, _ in server.log if req.path == "/token"]


def test_anonymous_token_flow(httpserver: HTTPServer):
    serve_protected_manifest(httpserver, "anon-token")
    httpserver.expect_request("/token").respond_with_json({"token": "anon-token"})
    raw, media_type, _digest = client_for(httpserver).get_manifest("lib/app", "v1")
    assert raw == MANIFEST and media_type == OCI_MANIFEST
    (req,) = token_requests(httpserver)
    assert req.args.getlist("scope") == ["repository:lib/app:pull"]
    assert req.args["service"] == "test-registry"
    assert "Authorization" not in req.headers


def test_token_flow_with_credentials_and_access_token_field(httpserver: HTTPServer):
    serve_protected_manifest(httpserver, "user-token")
    basic = "Basic " + base64.b64encode(b"alice:s3cret").decode()
    httpserver.expect_request("/token", headers={"Authorization": basic}).respond_with_json(
        {"access_token": "user-token", "expires_in": 300})
    client = client_for(httpserver, Credentials("alice", "s3cret"))
    client.get_manifest("lib/app", "v1")
    client.get_manifest("lib/app", "v1")  # the cached token is sent up front
    (req,) = token_requests(httpserver)
    assert req.args["account"] == "alice"
    manifest_auth = [r.headers.get("Authorization") for r, _ in httpserver.log
                     if r.path.endswith("/v1")]
    assert manifest_auth == [None, "Bearer user-token", "Bearer user-token"]


def test_wrong_password_is_unauthorized(httpserver: HTTPServer):
    serve_protected_manifest(httpserver, "never")
    httpserver.expect_request("/token").respond_with_data("", status=401)
    with pytest.raises(Unauthorized, match="wrong username or password for") as info:
        client_for(httpserver, Credentials("alice", "bad")).get_manifest("lib/app", "v1")
    assert "ociimg login" in info.value.hint


def test_anonymous_refused_asks_for_login(httpserver: HTTPServer):
    serve_protected_manifest(httpserver, "never")
    httpserver.expect_request("/token").respond_with_data("", status=401)
    with pytest.raises(Unauthorized, match="authentication required"):
        client_for(httpserver).get_manifest("lib/app", "v1")


def test_insufficient_scope_retries_once_with_new_scope(httpserver: HTTPServer):
    push_scope = "repository:lib/app:pull,push"
    httpserver.expect_request("/v2/lib/app/blobs/uploads/", method="POST",
                              headers={"Authorization": "Bearer push-token"}).respond_with_data(
        "", status=202, headers={"Location": "/upload/1"})
    httpserver.expect_request("/v2/lib/app/blobs/uploads/", method="POST",
                              headers={"Authorization": "Bearer pull-token"}).respond_with_data(
        "", status=401, headers={"WWW-Authenticate": bearer(httpserver, push_scope,
                                                           "insufficient_scope")})
    httpserver.expect_request("/v2/lib/app/blobs/uploads/", method="POST").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": bearer(httpserver,
                                                           "repository:lib/app:pull")})
    tokens = iter(["pull-token", "push-token"])
    httpserver.expect_request("/token").respond_with_handler(
        lambda _req: Response(json.dumps({"token": next(tokens)})))
    client = client_for(httpserver)
    resp = client.request("POST", "/v2/lib/app/blobs/uploads/", "repository:lib/app:pull")
    assert resp.status_code == 202
    scopes = [r.args.getlist("scope") for r in token_requests(httpserver)]
    assert scopes == [["repository:lib/app:pull"],
                      ["repository:lib/app:pull", push_scope]]


def test_basic_challenge_sends_credentials(httpserver: HTTPServer):
    basic = "Basic " + base64.b64encode(b"bob:pw").decode()
    httpserver.expect_request("/v2/lib/app/manifests/v1",
                              headers={"Authorization": basic}).respond_with_data(
        MANIFEST, content_type=OCI_MANIFEST)
    httpserver.expect_request("/v2/lib/app/manifests/v1").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
    client = client_for(httpserver, Credentials("bob", "pw"))
    assert client.get_manifest("lib/app", "v1")[0] == MANIFEST


def test_basic_challenge_without_credentials(httpserver: HTTPServer):
    httpserver.expect_request("/v2/lib/app/manifests/v1").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": 'Basic realm="registry"'})
    with pytest.raises(Unauthorized, match="authentication required"):
        client_for(httpserver).get_manifest("lib/app", "v1")


def test_realm_on_other_plain_http_host_gets_no_credentials(httpserver: HTTPServer):
    evil = 'Bearer realm="http://10.9.9.9:8080/steal",service="x"'
    httpserver.expect_request("/v2/lib/app/manifests/v1").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": evil})
    with pytest.raises(RegistryError, match="plain http on another origin"):
        client_for(httpserver, Credentials("a", "b")).get_manifest("lib/app", "v1")


# Auth files -----------------------------------------------------------------------
def b64(user: str, pw: str) -> str:
    return base64.b64encode(f"{user}:{pw}".encode()).decode()


@pytest.fixture
def env(tmp_path, monkeypatch) -> dict[str, str]:
    """A clean environment: HOME in tmp, no auth-related variables inherited."""
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "XDG_CONFIG_HOME", "DOCKER_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}:{os.environ.get('PATH', '')}")
    (tmp_path / "home").mkdir()
    (tmp_path / "bin").mkdir()
    return {"HOME": str(tmp_path / "home")}


def write_json(path: Path, doc: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return path


@pytest.mark.parametrize("key, normal", [
    ("https://index.docker.io/v1/", "docker.io"), ("index.docker.io", "docker.io"),
    ("registry-1.docker.io", "docker.io"), ("http://127.0.0.1:5000/v2/", "127.0.0.1:5000"),
    ("quay.io/org/repo", "quay.io/org/repo"), ("quay.io", "quay.io"),
])
def test_normalize_auth_key(key, normal):
    assert normalize_auth_key(key) == normal


def test_docker_config_hub_key_and_base64(env, tmp_path):
    write_json(tmp_path / "home/.docker/config.json",
               {"auths": {"https://index.docker.io/v1/": {"auth": b64("hubuser", "p:w")}}})
    assert find_credentials("docker.io") == Credentials("hubuser", "p:w")
    assert find_credentials("quay.io") is None


def test_containers_auth_json_wins_over_docker(env, tmp_path):
    write_json(tmp_path / "home/.docker/config.json",
               {"auths": {"quay.io": {"auth": b64("docker", "x")}}})
    write_json(tmp_path / "home/.config/containers/auth.json",
               {"auths": {"quay.io": {"username": "podman", "password": "y"}}})
    assert find_credentials("quay.io").username == "podman"


def test_registry_auth_file_env_and_explicit_file(env, tmp_path, monkeypatch):
    write_json(tmp_path / "home/.config/containers/auth.json",
               {"auths": {"r.example": {"auth": b64("default", "1")}}})
    env_file = write_json(tmp_path / "env.json",
                          {"auths": {"r.example": {"auth": b64("env", "2")}}})
    explicit = write_json(tmp_path / "cli.json",
                          {"auths": {"r.example": {"auth": b64("cli", "3")}}})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(env_file))
    assert find_credentials("r.example").username == "env"
    assert find_credentials("r.example", auth_file=explicit).username == "cli"


def test_repository_scoped_entry_is_preferred(env, tmp_path):
    write_json(tmp_path / "home/.config/containers/auth.json", {"auths": {
        "r.example": {"auth": b64("registry-wide", "1")},
        "r.example/team/app": {"auth": b64("app-only", "2")}}})
    assert find_credentials("r.example", "team/app").username == "app-only"
    assert find_credentials("r.example", "team/other").username == "registry-wide"


def test_malformed_auth_entry_is_a_clear_error(env, tmp_path):
    path = write_json(tmp_path / "a.json", {"auths": {"r.example": {
        "auth": base64.b64encode(b"nocolon").decode()}}})
    with pytest.raises(InvalidDocument, match="has no ':'"):
        find_credentials("r.example", auth_file=path)


def make_helper(tmp_path: Path, name: str, script: str) -> None:
    helper = tmp_path / "bin" / f"docker-credential-{name}"
    helper.write_text("#!/bin/sh\n" + script)
    helper.chmod(0o755)


def test_cred_helper_and_creds_store(env, tmp_path):
    # The helper echoes back the server URL it was asked about, as the password.
    make_helper(tmp_path, "fake", 'read url; printf \'{"ServerURL":"%s","Username":"helper",'
                                  '"Secret":"%s"}\' "$url" "$url"\n')
    write_json(tmp_path / "home/.docker/config.json",
               {"credHelpers": {"r.example": "fake"}, "credsStore": "fake"})
    assert find_credentials("r.example") == Credentials("helper", "r.example")
    # credsStore is the fallback for every other registry; Hub is asked by its v1 key.
    assert find_credentials("docker.io") == Credentials("helper", "https://index.docker.io/v1/")


def test_missing_or_failing_helper_means_no_credentials(env, tmp_path):
    make_helper(tmp_path, "broken", "echo 'credentials not found' >&2; exit 1\n")
    write_json(tmp_path / "home/.docker/config.json",
               {"credHelpers": {"a.example": "broken", "b.example": "absent"}})
    assert find_credentials("a.example") is None
    assert find_credentials("b.example") is None


# login / logout -------------------------------------------------------------------
def serve_basic_registry(server: HTTPServer, user: str, pw: str) -> None:
    basic = "Basic " + base64.b64encode(f"{user}:{pw}".encode()).decode()
    server.expect_request("/v2/", headers={"Authorization": basic}).respond_with_json({})
    server.expect_request("/v2/").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": 'Basic realm="r"'})


def test_login_verifies_then_writes_0600(env, tmp_path, httpserver: HTTPServer):
    serve_basic_registry(httpserver, "carol", "right")
    host = f"127.0.0.1:{httpserver.port}"
    auth_file = tmp_path / "auth" / "auth.json"
    write_json(auth_file, {"auths": {"other.example": {"auth": b64("x", "y")}}, "keep": 1})
    assert login(host, "carol", "right", auth_file) == auth_file
    doc = json.loads(auth_file.read_text())
    assert doc["keep"] == 1 and "other.example" in doc["auths"]
    assert base64.b64decode(doc["auths"][host]["auth"]) == b"carol:right"
    assert stat.S_IMODE(auth_file.stat().st_mode) == 0o600
    assert find_credentials(host, auth_file=auth_file) == Credentials("carol", "right")
    assert logout(host, auth_file) is True
    assert find_credentials(host, auth_file=auth_file) is None
    assert "other.example" in json.loads(auth_file.read_text())["auths"]
    assert logout(host, auth_file) is False


def test_login_wrong_password_writes_nothing(env, tmp_path, httpserver: HTTPServer):
    serve_basic_registry(httpserver, "carol", "right")
    auth_file = tmp_path / "auth.json"
    with pytest.raises(Unauthorized, match="wrong username or password"):
        login(f"127.0.0.1:{httpserver.port}", "carol", "wrong", auth_file)
    assert not auth_file.exists()


def test_login_with_token_realm(env, tmp_path, httpserver: HTTPServer):
    basic = "Basic " + base64.b64encode(b"dave:pw").decode()
    httpserver.expect_request("/v2/", headers={"Authorization": "Bearer t1"}).respond_with_json({})
    challenge = f'Bearer realm="{httpserver.url_for("/token")}",service="s"'
    httpserver.expect_request("/v2/").respond_with_data(
        "", status=401, headers={"WWW-Authenticate": challenge})
    httpserver.expect_request("/token", headers={"Authorization": basic}).respond_with_json(
        {"token": "t1"})
    httpserver.expect_request("/token").respond_with_data("", status=401)
    host = f"localhost:{httpserver.port}"
    login(host, "dave", "pw", tmp_path / "a.json")
    with pytest.raises(Unauthorized):
        login(host, "dave", "nope", tmp_path / "b.json")
    assert not (tmp_path / "b.json").exists()


def test_default_login_file_is_podmans(env, tmp_path, monkeypatch, httpserver: HTTPServer):
    serve_basic_registry(httpserver, "erin", "pw")
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / "run"))
    path = login(f"127.0.0.1:{httpserver.port}", "erin", "pw")
    assert path == tmp_path / "run" / "containers" / "auth.json"
    assert find_credentials(f"127.0.0.1:{httpserver.port}").username == "erin"


def test_identity_token_uses_oauth2_refresh_grant(env, tmp_path, httpserver: HTTPServer):
    serve_protected_manifest(httpserver, "acr-access")
    httpserver.expect_request("/token", method="POST").respond_with_json(
        {"access_token": "acr-access"})
    auth_file = write_json(tmp_path / "auth.json", {"auths": {
        f"127.0.0.1:{httpserver.port}": {"auth": b64("00000000-0000-0000-0000-000000000000", ""),
                                         "identitytoken": "refresh-me"}}})
    creds = find_credentials(f"127.0.0.1:{httpserver.port}", auth_file=auth_file)
    assert creds.identity_token == "refresh-me"
    client_for(httpserver, creds).get_manifest("lib/app", "v1")
    (req,) = token_requests(httpserver)
    assert req.method == "POST" and "Authorization" not in req.headers
    assert req.form["grant_type"] == "refresh_token"
    assert req.form["refresh_token"] == "refresh-me"
    assert req.form.getlist("scope") == ["repository:lib/app:pull"]
    assert req.form["service"] == "test-registry"


def test_helper_identity_token(env, tmp_path):
    make_helper(tmp_path, "acr", 'cat >/dev/null; echo \'{"Username":"<token>","Secret":"rt"}\'\n')
    write_json(tmp_path / "home/.docker/config.json", {"credHelpers": {"r.example": "acr"}})
    assert find_credentials("r.example").identity_token == "rt"


def test_token_cached_under_our_scope_when_challenge_differs(httpserver: HTTPServer):
    # The registry asks for more than we need (pull,push for a pull): one token request.
    httpserver.expect_request("/v2/lib/app/manifests/v1",
                              headers={"Authorization": "Bearer wide"}).respond_with_data(
        MANIFEST, content_type=OCI_MANIFEST)
    httpserver.expect_request("/v2/lib/app/manifests/v1").respond_with_data(
        "", status=401,
        headers={"WWW-Authenticate": bearer(httpserver, "repository:lib/app:pull,push")})
    httpserver.expect_request("/token").respond_with_json({"token": "wide"})
    client = client_for(httpserver)
    for _ in range(3):
        client.get_manifest("lib/app", "v1")
    assert len(token_requests(httpserver)) == 1
    assert len(httpserver.log) == 5  # 401, token, 200, then two straight 200s


@pytest.mark.parametrize("body, error", [
    (b"x" * ((1 << 20) + 10), "limit"),
    (b"<html>login</html>", "not valid JSON"),
    (b'{"token": ""}', "no token"),
    (b'["token"]', "no token"),
])
def test_bad_token_responses(httpserver: HTTPServer, body, error):
    serve_protected_manifest(httpserver, "never")
    httpserver.expect_request("/token").respond_with_data(body)
    with pytest.raises((RegistryError, InvalidDocument), match=error):
        client_for(httpserver).get_manifest("lib/app", "v1")

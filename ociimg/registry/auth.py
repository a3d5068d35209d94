"""Registry authentication: challenges, the Bearer token flow, Basic, auth files.

* :func:`parse_www_authenticate` follows RFC 9110 §11.6.1 (several challenges in one
  header, quoted-strings with commas and backslash escapes): ``scope="repository:a/b:pull,push"``
  must not be split on its inner comma (Azure/azure-sdk-for-js#20898).
* The token realm comes from the server, so it is checked before we send credentials
  to it (ggcr bearer.go, #2258): http(s) only, and plain http only on the registry's
  own host:port when the registry itself is plain http (never a downgrade from https).
  Redirects the realm answers with are the transport's: no credential and no body
  (the refresh token) follows one to another origin.
* Credentials are read from the files podman and docker use (containers-auth.json(5),
  docker config.json with ``credHelpers``/``credsStore``), in containers/image's order.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from ociimg.errors import InvalidDocument, RegistryError, Unauthorized
from ociimg.fsutil import atomic_write
from ociimg.registry.transport import (
    MAX_TOKEN_BYTES,
    Transport,
    TransportOptions,
    parse_json,
    read_capped,
)
from ociimg.registry.urls import check_url, origin, split_host

DOCKER_HUB_KEY = "https://index.docker.io/v1/"
_DOCKER_HUB_NAMES = frozenset({"docker.io", "index.docker.io", "registry-1.docker.io"})
_TOKEN_MIN_LIFETIME = 60  # seconds; the docker token spec's default for a missing expires_in
_TOKEN_MAX_LIFETIME = 24 * 3600  # a server-chosen lifetime is data: bound it
_HELPER_TIMEOUT = 30


# WWW-Authenticate ------------------------------------------------------------
@dataclass(frozen=True)
class Challenge:
    scheme: str  # lowercased: "bearer", "basic"
    params: dict[str, str] = field(default_factory=dict)  # names lowercased
    token68: str | None = None


_TCHAR = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
_UNQUOTED = {chr(c) for c in range(0x21, 0x7F)} - {",", '"', "\\", "="}
_TOKEN68 = set("-._~+/0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


class _Scanner:
    def __init__(self, text: str) -> None:
        self.text, self.pos = text, 0

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_ws(self) -> None:
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def token(self, chars: set[str] = _TCHAR) -> str:
        start = self.pos
        while self.peek() and self.peek() in chars:
            self.pos += 1
        return self.text[start:self.pos]

    def quoted(self) -> str:
        self.pos += 1  # opening quote
        out = []
        while self.pos < len(self.text):
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\" and self.pos < len(self.text):
                out.append(self.text[self.pos])
                self.pos += 1
            elif ch == '"':
                return "".join(out)
            else:
                out.append(ch)
        raise InvalidDocument(
            f"WWW-Authenticate: unterminated quoted string in {self.text[:100]!r}")

    def try_param(self) -> tuple[str, str] | None:
        """``name = (token | quoted-string)``; rewinds and returns None if not a param."""
        start = self.pos
        self.skip_ws()
        name = self.token()
        self.skip_ws()
        if name and self.peek() == "=":
            self.pos += 1
            self.skip_ws()
            if self.peek() == '"':
                return name.lower(), self.quoted()
            # Strictly a token, but registries send unquoted URLs: take up to , or space.
            value = self.token(_UNQUOTED)
            self.skip_ws()
            if self.peek() in ("", ","):
                return name.lower(), value
        self.pos = start
        return None


def parse_www_authenticate(header: str) -> list[Challenge]:
    """All challenges in one WWW-Authenticate value (RFC 9110 §11.6.1)."""
    sc = _Scanner(header)
    challenges: list[Challenge] = []
    while True:
        while sc.peek() in (" ", "\t", ","):
            if not sc.peek():
                break
            sc.pos += 1
        if not sc.peek():
            return challenges
        scheme = sc.token()
        if not scheme:
            raise InvalidDocument(f"WWW-Authenticate: expected an auth scheme at {header[:100]!r}")
        challenges.append(_parse_challenge_body(sc, scheme.lower()))


def _parse_challenge_body(sc: _Scanner, scheme: str) -> Challenge:
    params: dict[str, str] = {}
    sc.skip_ws()
    first = sc.try_param()
    if first is None:
        start = sc.pos
        blob = sc.token(_TOKEN68)
        while sc.peek() == "=":
            sc.pos += 1
        token68 = sc.text[start:sc.pos] if blob else None
        return Challenge(scheme, params, token68)
    params[first[0]] = first[1]
    while True:
        save = sc.pos
        sc.skip_ws()
        if sc.peek() != ",":
            sc.pos = save
            return Challenge(scheme, params)
        sc.pos += 1
        while sc.peek() in (" ", "\t", ",") and sc.peek():
            sc.pos += 1
        nxt = sc.try_param()
        if nxt is None:
            return Challenge(scheme, params)  # the next challenge starts here
        params[nxt[0]] = nxt[1]


# Credentials -----------------------------------------------------------------
@dataclass(frozen=True)
class Credentials:
    username: str
    password: str = field(repr=False)
    # docker's "identitytoken" (ACR, `az acr login`): an OAuth2 refresh token exchanged
    # at the realm by POST (docker token spec, oauth.md) instead of Basic auth.
    identity_token: str | None = field(default=None, repr=False)

    def basic_header(self) -> str:
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode()


def normalize_auth_key(key: str) -> str:
    """"https://index.docker.io/v1/" → "docker.io"; "http://h:5000/v2/" → "h:5000"."""
    if "://" in key:
        key = key.split("://", 1)[1]
    key = key.rstrip("/")
    for suffix in ("/v1", "/v2"):
        if key.endswith(suffix) and key.count("/") == 1:
            key = key[: -len(suffix)]
    host, _, rest = key.partition("/")
    if host.lower() in _DOCKER_HUB_NAMES:
        host = "docker.io"
    return f"{host}/{rest}" if rest else host


def auth_file_candidates(environ: Mapping[str, str] | None = None) -> list[Path]:
    """containers-auth.json(5) order, then docker's config.json."""
    env = os.environ if environ is None else environ
    home = Path(env.get("HOME") or Path.home())
    out: list[Path] = []
    if env.get("REGISTRY_AUTH_FILE"):
        out.append(Path(env["REGISTRY_AUTH_FILE"]))
    if env.get("XDG_RUNTIME_DIR"):
        out.append(Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json")
    xdg_config = Path(env["XDG_CONFIG_HOME"]) if env.get("XDG_CONFIG_HOME") else home / ".config"
    out.append(xdg_config / "containers" / "auth.json")
    docker_dir = Path(env["DOCKER_CONFIG"]) if env.get("DOCKER_CONFIG") else home / ".docker"
    out.append(docker_dir / "config.json")
    return out


def default_login_file(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``login`` writes when no file is named: podman's choice."""
    env = os.environ if environ is None else environ
    if env.get("REGISTRY_AUTH_FILE"):
        return Path(env["REGISTRY_AUTH_FILE"])
    if env.get("XDG_RUNTIME_DIR"):
        return Path(env["XDG_RUNTIME_DIR"]) / "containers" / "auth.json"
    home = Path(env.get("HOME") or Path.home())
    return home / ".config" / "containers" / "auth.json"


def find_credentials(registry: str, repository: str | None = None, *,
                     auth_file: Path | None = None,
                     environ: Mapping[str, str] | None = None) -> Credentials | None:
    """Credentials for ``registry`` (the reference's domain, "docker.io" for Hub)."""
    files = [Path(auth_file)] if auth_file else auth_file_candidates(environ)
    for path in files:
        creds = _credentials_from_file(path, registry, repository)
        if creds:
            return creds
    return None


def _load_auth_file(path: Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise RegistryError(f"cannot read auth file {path}: {exc.strerror}") from exc
    try:
        doc = parse_json(text, f"auth file {path}") if text.strip() else {}
    except InvalidDocument as exc:
        raise InvalidDocument(exc.message, hint="fix or remove the file") from exc
    if not isinstance(doc, dict):
        raise InvalidDocument(f"auth file {path}: expected a JSON object")
    return doc


def _lookup_keys(registry: str, repository: str | None) -> list[str]:
    """Most specific first: "host/ns/repo", "host/ns", "host" (containers-auth.json(5))."""
    host = normalize_auth_key(registry)
    keys = []
    if repository:
        parts = repository.split("/")
        keys = [f"{host}/{'/'.join(parts[:i])}" for i in range(len(parts), 0, -1)]
    return [*keys, host]


def _credentials_from_file(path: Path, registry: str,
                           repository: str | None) -> Credentials | None:
    doc = _load_auth_file(path)
    auths = doc.get("auths") if isinstance(doc.get("auths"), dict) else {}
    by_key = {normalize_auth_key(k): v for k, v in auths.items() if isinstance(v, dict)}
    helpers = doc.get("credHelpers") if isinstance(doc.get("credHelpers"), dict) else {}
    helpers = {normalize_auth_key(k): v for k, v in helpers.items()}
    for key in _lookup_keys(registry, repository):
        if key in helpers:
            creds = run_credential_helper(helpers[key], registry)
            if creds:
                return creds
        if key in by_key:
            creds = _decode_entry(by_key[key], path, key)
            if creds:
                return creds
    if isinstance(doc.get("credsStore"), str):
        return run_credential_helper(doc["credsStore"], registry)
    return None


def _decode_entry(entry: dict, path: Path, key: str) -> Credentials | None:
    creds = _decode_basic_entry(entry, path, key)
    token = entry.get("identitytoken")
    if isinstance(token, str) and token:
        return Credentials(creds.username if creds else "<token>", "", token)
    return creds


def _decode_basic_entry(entry: dict, path: Path, key: str) -> Credentials | None:
    if isinstance(entry.get("auth"), str) and entry["auth"]:
        try:
            user, sep, password = base64.b64decode(entry["auth"]).decode().partition(":")
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidDocument(f"auth file {path}: auths[{key!r}].auth is not base64 "
                                  "user:password") from exc
        if not sep:
            raise InvalidDocument(f"auth file {path}: auths[{key!r}].auth has no ':'")
        return Credentials(user, password)
    if isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
        return Credentials(entry["username"], entry["password"])
    return None


def run_credential_helper(name: str, registry: str) -> Credentials | None:
    """docker-credential-<name> get: server URL on stdin, {Username, Secret} on stdout."""
    if not isinstance(name, str) or not name or "/" in name:
        return None
    exe = shutil.which(f"docker-credential-{name}")
    if exe is None:
        return None
    server = DOCKER_HUB_KEY if normalize_auth_key(registry) == "docker.io" else registry
    try:
        out = subprocess.run([exe, "get"], input=server.encode(), capture_output=True,
                             timeout=_HELPER_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RegistryError(f"credential helper {exe} failed: {exc}") from exc
    if out.returncode != 0:
        return None  # "credentials not found in native keychain"
    try:
        doc = parse_json(out.stdout[:MAX_TOKEN_BYTES], f"credential helper {exe}")
        user, secret = doc["Username"], doc["Secret"]
    except (InvalidDocument, KeyError, TypeError):
        raise RegistryError(f"credential helper {exe}: unreadable answer") from None
    if not isinstance(user, str) or not isinstance(secret, str):
        raise RegistryError(f"credential helper {exe}: unreadable answer")
    if user == "<token>":  # the helper protocol's mark for an identity token
        return Credentials("<token>", "", secret)
    return Credentials(user, secret)


# Token flow ------------------------------------------------------------------
def check_realm(realm: str, registry_url: str) -> None:
    """The realm is server-chosen: refuse non-http(s), and plain http anywhere but the
    registry's own origin (another host, or a downgrade from an https registry)."""
    where = f"token realm from {urlsplit(registry_url).netloc}"
    try:
        check_url(realm, where)
    except RegistryError:
        raise RegistryError(f"token realm {realm[:100]!r} from {urlsplit(registry_url).netloc} "
                            "is not an http(s) URL") from None
    if origin(realm)[0] == "http" and origin(realm) != origin(registry_url):
        raise RegistryError(
            f"token realm {realm[:100]} from {urlsplit(registry_url).netloc} is plain http "
            "on another origin; refusing to send credentials there",
            hint="the registry's auth configuration is unsafe; use an https realm")


class Authenticator:
    """Authorization headers for one registry: cached Bearer tokens per scope, or Basic."""

    def __init__(self, registry_url: str, transport: Transport,
                 credentials: Credentials | None = None, display: str | None = None) -> None:
        self.registry_url = registry_url.rstrip("/")
        # Messages name the registry as the user wrote it ("docker.io", not registry-1).
        self.host = display or urlsplit(self.registry_url).netloc
        self.transport = transport
        self.credentials = credentials
        self._basic = False
        self._tokens: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def header(self, scope: str) -> str | None:
        """What to send before any challenge: a cached token, or Basic once asked for."""
        if self._basic and self.credentials:
            return self.credentials.basic_header()
        with self._lock:
            cached = self._tokens.get(scope)
        if cached and cached[1] > time.monotonic():
            return f"Bearer {cached[0]}"
        return None

    def answer(self, www_authenticate: str, scope: str) -> str:
        """Authorization for a 401's challenge; on insufficient_scope its scope is added."""
        challenges = parse_www_authenticate(www_authenticate)
        by_scheme = {c.scheme: c for c in challenges}
        if "bearer" in by_scheme:
            chal = by_scheme["bearer"]
            want = chal.params.get("scope") or scope
            if chal.params.get("error") == "insufficient_scope" and chal.params.get("scope"):
                want = _merge_scopes(scope, chal.params["scope"])
            token = self.fetch_token(chal, want)
            with self._lock:  # found again under the scope we will ask for next time
                self._tokens[scope] = self._tokens[want]
            return f"Bearer {token}"
        if "basic" in by_scheme:
            if not self.credentials:
                raise self.unauthorized(scope)
            self._basic = True
            return self.credentials.basic_header()
        schemes = ", ".join(c.scheme for c in challenges) or "none"
        raise Unauthorized(f"{self.host}: unsupported authentication scheme(s): {schemes}")

    def fetch_token(self, chal: Challenge, scope: str) -> str:
        realm = chal.params.get("realm")
        if not realm:
            raise RegistryError(f"{self.host}: Bearer challenge without a realm")
        check_realm(realm, self.registry_url)
        query = [("service", chal.params["service"])] if chal.params.get("service") else []
        query += [("scope", s) for s in scope.split()]
        if self.credentials and self.credentials.identity_token:
            resp = self._refresh_token_request(realm, query)
        else:
            if self.credentials:
                query.append(("account", self.credentials.username))
            url = realm + ("&" if urlsplit(realm).query else "?") + urlencode(query)
            headers = {"Authorization": self.credentials.basic_header()} if self.credentials \
                else {}
            resp = self.transport.request("GET", url, headers=headers, stream=True)
        with resp:
            if resp.status_code in (401, 403):
                raise self.unauthorized(scope)
            if resp.status_code != 200:
                raise RegistryError(f"{self.host}: token request to {urlsplit(realm).netloc} "
                                    f"failed with HTTP {resp.status_code}")
            body = read_capped(resp, MAX_TOKEN_BYTES, f"{self.host}: token response")
        token, lifetime = _parse_token_response(body, self.host)
        with self._lock:
            self._tokens[scope] = (token, time.monotonic() + lifetime)
        return token

    def _refresh_token_request(self, realm: str, query: list[tuple[str, str]]) -> Any:
        assert self.credentials and self.credentials.identity_token
        form = [("grant_type", "refresh_token"), ("client_id", "ociimg"),
                ("refresh_token", self.credentials.identity_token), *query]
        return self.transport.request(
            "POST", realm, body=urlencode(form).encode(), stream=True,
            headers={"Content-Type": "application/x-www-form-urlencoded"})

    def unauthorized(self, scope: str) -> Unauthorized:
        if self.credentials:
            return Unauthorized(f"wrong username or password for {self.host}",
                                hint=f"run: ociimg login {self.host}")
        what = scope.split(":")[1] if scope.count(":") >= 2 else self.host
        return Unauthorized(f"authentication required for {self.host} ({what})",
                            hint=f"run: ociimg login {self.host}")


def _merge_scopes(ours: str, theirs: str) -> str:
    seen = ours.split()
    return " ".join([*seen, *(s for s in theirs.split() if s not in seen)])


def _parse_token_response(body: bytes, host: str) -> tuple[str, float]:
    try:
        doc = parse_json(body, f"{host}: token response")
    except InvalidDocument as exc:
        raise RegistryError(exc.message) from exc
    token = doc.get("token") or doc.get("access_token") if isinstance(doc, dict) else None
    if not isinstance(token, str) or not token:
        raise RegistryError(f"{host}: token response has no token")
    return token, token_lifetime(doc.get("expires_in"))


def token_lifetime(expires: object) -> float:
    """Seconds to cache a token: expires_in when it is a sane number (not 10**400, a
    string, nan or negative), at least the spec's 60 s, at most a day; renewed a little
    early so a token never expires mid-request."""
    lifetime = 0.0
    if isinstance(expires, int | float) and not isinstance(expires, bool) and expires > 0:
        lifetime = float(min(expires, _TOKEN_MAX_LIFETIME))  # min first: int → float overflows
    return max(lifetime, _TOKEN_MIN_LIFETIME) - 10


# login / logout --------------------------------------------------------------
def login(registry: str, username: str, password: str, auth_file: Path | None = None, *,
          options: TransportOptions | None = None) -> Path:
    """Check the credentials against the registry, then store them; returns the file."""
    creds = Credentials(username, password)
    verify_credentials(registry, creds, options)
    path = Path(auth_file) if auth_file else default_login_file()
    doc = _load_auth_file(path)
    auths = doc.setdefault("auths", {})
    if not isinstance(auths, dict):
        raise InvalidDocument(f"auth file {path}: auths is not an object")
    key = normalize_auth_key(registry)
    for old in [k for k in auths if normalize_auth_key(k) == key]:
        del auths[old]
    if key == "docker.io" and path.name == "config.json":
        key = DOCKER_HUB_KEY  # docker itself only reads this spelling
    auths[key] = {"auth": base64.b64encode(f"{username}:{password}".encode()).decode()}
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)
    return path


def logout(registry: str, auth_file: Path | None = None) -> bool:
    """Remove stored credentials for ``registry``; False if there were none."""
    key = normalize_auth_key(registry)
    paths = [Path(auth_file)] if auth_file else auth_file_candidates()
    removed = False
    for path in paths:
        doc = _load_auth_file(path)
        auths = doc.get("auths")
        if not isinstance(auths, dict):
            continue
        stale = [k for k in auths if normalize_auth_key(k) == key]
        if stale:
            for k in stale:
                del auths[k]
            atomic_write(path, (json.dumps(doc, indent=2) + "\n").encode(), mode=0o600)
            removed = True
    return removed


def registry_api_host(registry: str) -> str:
    return "registry-1.docker.io" if normalize_auth_key(registry) == "docker.io" else registry


def verify_credentials(registry: str, creds: Credentials,
                       options: TransportOptions | None = None) -> None:
    """GET /v2/, answering its challenge with ``creds``; raises Unauthorized if refused."""
    transport = Transport(options)
    try:
        base = transport.base_url(registry_api_host(registry))
        auth = Authenticator(base, transport, creds, display=registry)
        # The /v2/ body says nothing we need: never buffered (a registry may send 1 GiB).
        resp = transport.request("GET", f"{base}/v2/", stream=True)
        resp.close()
        if resp.status_code == 401 and "WWW-Authenticate" in resp.headers:
            header = auth.answer(resp.headers["WWW-Authenticate"], "")
            resp = transport.request("GET", f"{base}/v2/", headers={"Authorization": header},
                                     stream=True)
            resp.close()
        if resp.status_code in (401, 403):
            raise auth.unauthorized("")
        if resp.status_code != 200:
            raise RegistryError(f"{split_host(registry)[0]}: GET /v2/ answered HTTP "
                                f"{resp.status_code}; is this a registry?")
    finally:
        transport.close()

"""HTTP for the registry client: the only module in ociimg that speaks HTTP (urllib3).

urllib3 directly, not requests: requests adds ~30 ms of imports (charset_normalizer,
idna, its own modules) to every pull for features a registry client must not use
anyway (cookies, ``~/.netrc``, automatic redirects). What it owns:

* No ``~/.netrc``: requests' ``rebuild_auth`` re-applies netrc credentials to the *new*
  host after a redirect (requests ``sessions.py``); urllib3 never reads it. Proxies are honoured
  explicitly, from HTTPS_PROXY/HTTP_PROXY/NO_PROXY (:func:`proxies_for`).
* Redirects are followed here (``redirect=False``): when scheme, host or port change,
  only harmless headers (Accept, Range …) follow, never Authorization or a request
  body: S3/CDN blob storage rejects a forwarded registry token
  (distribution/distribution#2055) and must never see our credentials (containerd
  CVE-2020-15157), and a token realm that answers 307 must not get the refresh token
  it was POSTed re-sent to wherever it points. Such a redirect of a request with a
  body is refused.
* Every exchange has a time and speed budget (:mod:`ociimg.registry.budget`): a
  registry trickling bytes is cut off, not waited on forever.
* Retries with exponential backoff on connection errors, 5xx, 408 and 429 — honouring
  Retry-After — but only for requests whose body can be sent again.
* Size caps on everything buffered in memory (containers/image iolimits).
* One :func:`map_exceptions` turns urllib3/socket errors into RegistryUnreachable.
"""

from __future__ import annotations

import contextlib
import email.utils
import io
import json
import os
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote, urlsplit

import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions
from urllib3.util import Timeout, make_headers

from ociimg.errors import InvalidDocument, OciimgError, RegistryError, RegistryUnreachable
from ociimg.registry.budget import (
    Budget,
    BudgetSocket,
    Limits,
    SlowTransfer,
    Watchdog,
    active,
    guarded,
    watchdog,
)
from ociimg.registry.urls import origin, proxies_for, resolve_url, scheme_for, split_host

MAX_TOKEN_BYTES = 1 << 20
MAX_ERROR_BYTES = 1 << 20
MAX_BUFFERED_BYTES = 1 << 20  # a body read whole without a cap of its own (stream=False)
# What may follow a redirect to another origin: nothing that identifies or authorises us.
CROSS_ORIGIN_HEADERS = frozenset({"accept", "accept-encoding", "range", "if-range",
                                  "user-agent"})
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
USER_AGENT = "ociimg/0.1"

# A body is bytes, None, or a zero-argument factory returning bytes or a fresh stream:
# a factory can be called again, so such a request can be retried or re-sent to a
# 307 target. Anything else (an iterator) is sent once.
Body = bytes | Callable[[], bytes | IO[bytes]] | None


@dataclass
class TransportOptions:
    # insecure: TLS without verification if the host speaks it, else plain http
    # (skopeo --tls-verify=false). Loopback hosts get plain http even without it.
    insecure: bool = False
    ca_bundle: Path | None = None
    connect_timeout: float = 30.0
    read_timeout: float = 60.0
    retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0
    retry_after_cap: float = 60.0
    max_redirects: int = 10
    env_proxies: bool = True
    pool_size: int = 8
    limits: Limits = field(default_factory=Limits.from_env)


def backoff_delays(base: float = 0.5, cap: float = 30.0, factor: float = 2.0) -> Iterator[float]:
    """base, base·2, base·4 … capped; infinite — the caller decides how many to take."""
    delay = base
    while True:
        yield min(delay, cap)
        delay *= factor


def retry_after_delay(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds from now (RFC 9110 §10.2.3: delay-seconds or an HTTP-date)."""
    if not value:
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():  # str.isdigit() also takes "²" and "٣"
        return float(value) if len(value) <= 12 else 1e12  # past any cap a caller sets
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        now = now or datetime.now(UTC)
        return max(0.0, (when - now).total_seconds())
    except (TypeError, ValueError, OverflowError, IndexError):
        return None


def parse_json(body: bytes | str, what: str) -> Any:
    """JSON from a server or a file; InvalidDocument for anything json.loads refuses or
    cannot finish (nesting deep enough to exhaust the stack)."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidDocument(f"{what}: not valid JSON ({str(exc)[:100]})") from exc
    except RecursionError:
        raise InvalidDocument(f"{what}: JSON nested too deeply") from None


def describe_cause(exc: BaseException) -> str:
    """A short cause for a one-line message: the innermost reason, not a repr chain."""
    errors = urllib3.exceptions
    slow = _find_in_chain(exc, SlowTransfer)
    if slow is not None:
        return f"too slow: {slow}"
    if isinstance(exc, errors.MaxRetryError) and exc.reason is not None:
        exc = exc.reason
    if isinstance(exc, errors.SSLError | ssl.SSLError):
        return f"TLS error ({_innermost(exc)})"
    if isinstance(exc, errors.NewConnectionError | errors.NameResolutionError |
                  ConnectionRefusedError):
        return f"connection failed ({_innermost(exc)})"
    if isinstance(exc, errors.TimeoutError | TimeoutError):
        return "timed out"
    if isinstance(exc, errors.ProtocolError | errors.IncompleteRead | ConnectionError):
        return f"connection broken mid-body ({_innermost(exc)})"
    if isinstance(exc, errors.ProxyError):
        return f"proxy error ({_innermost(exc)})"
    return _innermost(exc)


def _find_in_chain(exc: BaseException, kind: type[BaseException]) -> BaseException | None:
    seen: set[int] = set()
    stack = [exc]
    while stack:
        item = stack.pop()
        if id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, kind):
            return item
        inner = [getattr(item, "reason", None), item.__cause__, item.__context__,
                 *(a for a in item.args if isinstance(a, BaseException))]
        stack.extend(i for i in inner if isinstance(i, BaseException))
    return None


def _innermost(exc: BaseException) -> str:
    seen = exc
    while True:
        inner = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
        if inner is None and seen.args and isinstance(seen.args[0], BaseException):
            inner = seen.args[0]
        if inner is None or inner is seen or not isinstance(inner, BaseException):
            break
        seen = inner
    text = str(seen) or type(seen).__name__
    return text.split("\n")[0][:200]


@contextlib.contextmanager
def map_exceptions(host: str) -> Iterator[None]:
    """urllib3/socket errors → RegistryUnreachable naming the host and cause."""
    try:
        yield
    except (urllib3.exceptions.HTTPError, OSError) as exc:
        if _find_in_chain(exc, SlowTransfer) is not None:
            hint = ("the registry answers too slowly; OCIIMG_SPEED_LIMIT, OCIIMG_SPEED_TIME "
                    "and OCIIMG_DEADLINE set the limits (0 turns one off)")
        else:
            hint = ("check the registry address and your network; for TLS problems see "
                    "--ca-bundle and --insecure")
        raise RegistryUnreachable(f"cannot reach {host}: {describe_cause(exc)}",
                                  hint=hint) from exc


class Response:
    """One HTTP response as the client reads it: requests' attribute names over urllib3's
    streaming response (the body is never preloaded)."""

    def __init__(self, raw: urllib3.BaseHTTPResponse, url: str, method: str,
                 budget: Budget | None = None) -> None:
        self.raw = raw
        self.url = url
        self.status_code = raw.status
        self.headers = raw.headers  # case-insensitive
        self.budget = budget
        self._method = method
        self._content: bytes | None = None

    @property
    def content(self) -> bytes:
        """The whole (decoded) body, at most MAX_BUFFERED_BYTES (else InvalidDocument);
        bodies with a limit of their own are read with read_capped."""
        if self._content is None:
            self._content = read_capped(self, MAX_BUFFERED_BYTES,
                                        f"response from {urlsplit(self.url).netloc}")
        return self._content

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", errors="replace")

    def iter_content(self, chunk_size: int, *, decode: bool = True) -> Iterator[bytes]:
        if self._content is not None:  # already buffered (stream=False)
            for start in range(0, len(self._content), chunk_size):
                yield self._content[start:start + chunk_size]
            return
        yield from guarded(self.budget, self.raw.stream(chunk_size, decode_content=decode))

    def close(self) -> None:
        """Done: a fully read body leaves the connection in the pool; an unread one
        closes it (the bytes still in flight would be taken for the next response)."""
        if self._method == "HEAD" or self.raw.length_remaining == 0:
            with contextlib.suppress(urllib3.exceptions.HTTPError, OSError), active(self.budget):
                self.raw.read()  # nothing to read: lets urllib3 return the connection
        self.raw.close()
        self.raw.release_conn()

    def __enter__(self) -> Response:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class _HTTPConnection(urllib3.connection.HTTPConnection):
    def connect(self) -> None:
        super().connect()
        self.sock = BudgetSocket(self.sock)  # type: ignore[assignment]


class _HTTPSConnection(urllib3.connection.HTTPSConnection):
    _watchdog: Watchdog | None = None

    def _new_conn(self) -> socket.socket:
        sock = super()._new_conn()
        self._watchdog = watchdog(sock)  # the handshake runs on the bare socket
        return sock

    def connect(self) -> None:
        try:
            super().connect()
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            if self._watchdog is not None and self._watchdog.fired:
                raise self._watchdog.error("TLS handshake") from exc
            raise
        finally:
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
        self.sock = BudgetSocket(self.sock)  # type: ignore[assignment]


class _HTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _HTTPConnection


class _HTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _HTTPSConnection


_POOL_CLASSES = {"http": _HTTPPool, "https": _HTTPSPool}


class Transport:
    """One urllib3 pool manager (plus one per proxy) with our redirect, retry, TLS and
    proxy policy."""

    def __init__(self, options: TransportOptions | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.options = options or TransportOptions()
        self.sleep = sleep
        self._schemes: dict[str, str] = {}
        self._pool_kw = self._tls_settings() | {
            "num_pools": 8, "maxsize": self.options.pool_size, "block": False,
            "retries": False,
            "timeout": Timeout(connect=self.options.connect_timeout,
                               read=self.options.read_timeout)}
        self._direct = urllib3.PoolManager(**self._pool_kw)
        self._direct.pool_classes_by_scheme = _POOL_CLASSES  # type: ignore[assignment]
        self._proxied: dict[str, urllib3.ProxyManager] = {}
        if self.options.insecure:
            # The user opted out of verification; one warning per request is noise.
            urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)

    def _tls_settings(self) -> dict[str, Any]:
        if self.options.insecure:
            return {"cert_reqs": "CERT_NONE"}  # urllib3 then skips the hostname check too
        if self.options.ca_bundle:
            return {"cert_reqs": "CERT_REQUIRED", "ca_certs": str(self.options.ca_bundle)}
        return {"cert_reqs": "CERT_REQUIRED", "ca_certs": default_ca_bundle()}

    def close(self) -> None:
        self._direct.clear()
        for manager in self._proxied.values():
            manager.clear()

    def _manager_for(self, url: str) -> urllib3.PoolManager:
        proxies = proxies_for(url) if self.options.env_proxies else {}
        proxy = proxies.get(urlsplit(url).scheme)
        if not proxy:
            return self._direct
        if proxy not in self._proxied:
            parts = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
            headers = None
            if parts.username:
                headers = make_headers(proxy_basic_auth=f"{unquote(parts.username)}:"
                                                        f"{unquote(parts.password or '')}")
                parts = parts._replace(netloc=parts.netloc.rpartition("@")[2])
            manager = urllib3.ProxyManager(parts.geturl(), proxy_headers=headers,
                                           **self._pool_kw)
            manager.pool_classes_by_scheme = _POOL_CLASSES  # type: ignore[assignment]
            self._proxied[proxy] = manager
        return self._proxied[proxy]

    def base_url(self, host: str) -> str:
        if self.options.ca_bundle and not self.options.insecure:
            return f"https://{host}"  # a CA bundle asks for TLS, even on loopback
        if not self.options.insecure:
            return f"{scheme_for(host)}://{host}"
        if host not in self._schemes:
            self._schemes[host] = self._probe_scheme(host)
        return f"{self._schemes[host]}://{host}"

    def _probe_scheme(self, host: str) -> str:
        """For an insecure registry: https if anything completes a TLS handshake there,
        else http. A bare handshake with an unverifying context: an HTTPS request would
        load the CA store (~40 ms) only to learn that no TLS is spoken."""
        name, port = split_host(host)
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        try:
            with socket.create_connection((name, port or 443),
                                          timeout=self.options.connect_timeout) as sock:
                sock.settimeout(self.options.read_timeout)
                limit = self.options.limits.deadline_base
                guard = watchdog(sock, limit) if limit > 0 else None
                try:
                    with context.wrap_socket(sock, server_hostname=name):
                        return "https"
                finally:
                    if guard is not None:
                        guard.cancel()
        except (OSError, ValueError):  # ssl.SSLError is an OSError
            return "http"

    def request(self, method: str, url: str, *, headers: Mapping[str, str] | None = None,
                body: Body | Iterator[bytes] = None, stream: bool = False,
                expected: int | None = None) -> Response:
        """Send with retries and redirects; the response is returned whatever its status.
        ``expected``: the body size we expect back (a blob's), which scales the deadline;
        by default a small document's."""
        replayable = body is None or isinstance(body, bytes) or callable(body)
        delays = backoff_delays(self.options.backoff_base, self.options.backoff_cap)
        for attempt in range(self.options.retries + 1):
            last = attempt >= self.options.retries or not replayable
            try:
                resp = self._follow_redirects(method, url, headers or {}, body, stream,
                                              expected)
            except RegistryUnreachable as exc:
                # A transfer cut for being too slow already waited out its limits
                # (OCIIMG_SPEED_TIME, OCIIMG_DEADLINE): retrying would multiply that wait.
                if last or _find_in_chain(exc, SlowTransfer) is not None:
                    raise
                self.sleep(next(delays))
                continue
            if resp.status_code not in RETRY_STATUSES or last:
                return resp
            delay = retry_after_delay(resp.headers.get("Retry-After"))
            delay = min(delay, self.options.retry_after_cap) if delay is not None else next(delays)
            resp.close()
            self.sleep(delay)
        raise AssertionError("unreachable")  # the loop always returns or raises

    def _follow_redirects(self, method: str, url: str, headers: Mapping[str, str],
                          body: Any, stream: bool, expected: int | None) -> Response:
        headers = dict(headers)
        first = origin(url)
        where = urlsplit(url).netloc[:100]  # host and port, as the user wrote them
        for _hop in range(self.options.max_redirects + 1):
            resp = self._send_once(method, url, headers, body, stream, expected)
            if resp.status_code not in REDIRECT_STATUSES or "Location" not in resp.headers:
                return resp
            discard(resp)
            target = resolve_url(url, resp.headers["Location"], f"{where}: redirect")
            if resp.status_code == 303 or (resp.status_code in (301, 302)
                                           and method not in ("GET", "HEAD")):
                method, body = "GET", None
            if origin(target) != first:
                # Credentials and request bodies (a refresh token, a password) belong to
                # the registry: another origin, or the same host over plain http, gets
                # neither. Once off the registry's origin, nothing is restored.
                if body is not None and body != b"":
                    raise RegistryError(
                        f"{where}: {method} redirected to another origin "
                        f"({urlsplit(target).netloc[:100]}); refusing to send the request "
                        "body there", hint="the registry or its token service is "
                        "misconfigured or hostile")
                headers = {k: v for k, v in headers.items()
                           if k.lower() in CROSS_ORIGIN_HEADERS}
            url = target
        raise RegistryUnreachable(
            f"{where}: more than {self.options.max_redirects} redirects "
            f"for {method} {url[:100]}")

    def _send_once(self, method: str, url: str, headers: Mapping[str, str], body: Any,
                   stream: bool, expected: int | None) -> Response:
        data = body() if callable(body) else body
        headers = {"User-Agent": USER_AGENT, **headers}
        length = len(data) if isinstance(data, bytes) else None
        if hasattr(data, "read"):
            length = _remaining_length(data)
            if length is not None and not any(k.lower() == "content-length" for k in headers):
                headers["Content-Length"] = str(length)  # else urllib3 sends it chunked
        if expected is None:
            expected = 0 if method == "HEAD" else MAX_BUFFERED_BYTES
        budget = Budget(self.options.limits, expected + (length or 0))
        try:
            with map_exceptions(urlsplit(url).netloc), active(budget):
                raw = self._manager_for(url).urlopen(
                    method, url, body=data, headers=headers, redirect=False,
                    assert_same_host=False, preload_content=False, decode_content=False)
        finally:
            if callable(body) and hasattr(data, "close"):
                data.close()
        budget.receiving()
        resp = Response(raw, url, method, budget)
        if not stream:
            with map_exceptions(urlsplit(url).netloc):
                resp.content  # noqa: B018  (buffered now, the connection is released)
        return resp


def _remaining_length(stream: Any) -> int | None:
    """Bytes left in a file body (Content-Length: registries may refuse chunked PUTs):
    a file's, an in-memory one's, or a blob read in place from an archive's."""
    remaining = getattr(stream, "remaining_bytes", None)
    if isinstance(remaining, int):
        return remaining
    if isinstance(stream, io.BytesIO):
        return stream.getbuffer().nbytes - stream.tell()
    try:
        return os.fstat(stream.fileno()).st_size - stream.tell()
    except (AttributeError, OSError, ValueError):
        return None


def default_ca_bundle() -> str | None:
    """certifi's bundle, which requests used (so trust did not change when it was
    dropped); None lets urllib3 load the system store."""
    try:
        import certifi
    except ImportError:
        return None
    return certifi.where()


def iter_body(resp: Response, chunk_size: int = 1 << 20, *,
              decode: bool = True) -> Iterator[bytes]:
    """Stream a response body; a broken connection surfaces as RegistryUnreachable.
    ``decode=False`` keeps a Content-Encoding as sent: a blob's digest is over its
    bytes, and Range offsets count them."""
    with map_exceptions(urlsplit(resp.url).netloc):
        yield from resp.iter_content(chunk_size, decode=decode)


DISCARD_READ_LIMIT = 64 << 10


def discard(resp: Response) -> None:
    """Done with ``resp`` without its body: a short body (a 401 challenge, a redirect)
    is read so the keep-alive connection is reused, which saves a TCP and TLS handshake
    on the next request; a long or unsized one is cut by closing the connection."""
    declared = resp.headers.get("Content-Length", "")
    if declared.isascii() and declared.isdigit() and len(declared) <= 19 \
            and int(declared) <= DISCARD_READ_LIMIT:
        with contextlib.suppress(OciimgError):
            resp.content  # noqa: B018  (reading it releases the connection to the pool)
    resp.close()


def read_capped(resp: Response, limit: int, what: str) -> bytes:
    """Read a whole (small) body, refusing anything over ``limit`` bytes."""
    declared = resp.headers.get("Content-Length", "").strip()
    if declared.isascii() and declared.isdigit() and (len(declared) > 19 or int(declared) > limit):
        resp.close()
        raise InvalidDocument(f"{what}: {declared} bytes exceeds the {limit}-byte limit")
    buf = bytearray()
    for chunk in iter_body(resp, 64 << 10):
        buf += chunk
        if len(buf) > limit:
            resp.close()
            raise InvalidDocument(f"{what}: body exceeds the {limit}-byte limit")
    return bytes(buf)

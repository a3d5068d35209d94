"""Time and speed limits for one HTTP exchange, enforced on the socket itself.

A per-read timeout alone lets a registry trickle one byte a minute forever. As curl's
``--speed-limit``/``--speed-time`` and ``--max-time`` do, every exchange gets a
:class:`Budget`: while a body flows (ours going out, theirs coming in), fewer than
``speed_limit`` bytes/s over any ``speed_time`` seconds aborts it; while we wait for the
response headers, ``deadline_base`` bounds the wait; and the whole exchange has an
overall deadline of ``deadline_base + expected_size / speed_limit``, so a big blob gets
time in proportion and a small document does not.

The limits are checked in :class:`BudgetSocket`, which wraps a connected socket: its
``makefile("rb")`` (what http.client reads status line, headers and body through) and
``sendall`` slice every blocking call so it wakes up in time to check. The budget of the
exchange in progress is per thread (:func:`active`), because pooled connections are
shared by requests while each request runs on one thread.
"""

from __future__ import annotations

import contextlib
import io
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from ociimg.errors import RegistryError

_SEND_SLICE = 64 << 10
_MIN_WAIT = 0.001  # a zero timeout would make the socket non-blocking


@dataclass(frozen=True)
class Limits:
    speed_limit: int = 1024  # bytes/s; 0 turns the low-speed check and overall deadline off
    speed_time: float = 30.0  # seconds below speed_limit before aborting
    deadline_base: float = 300.0  # seconds for headers, plus the size-scaled part; 0: off

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """OCIIMG_SPEED_LIMIT (bytes/s), OCIIMG_SPEED_TIME and OCIIMG_DEADLINE (seconds)."""
        env = os.environ if environ is None else environ
        default = cls()
        return cls(
            speed_limit=int(_env_number(env, "OCIIMG_SPEED_LIMIT", default.speed_limit)),
            speed_time=_env_number(env, "OCIIMG_SPEED_TIME", default.speed_time),
            deadline_base=_env_number(env, "OCIIMG_DEADLINE", default.deadline_base))


def _env_number(env: Mapping[str, str], name: str, default: float) -> float:
    text = env.get(name, "").strip()
    if not text:
        return default
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < 1e9:  # also refuses nan and inf
        raise RegistryError(f"{name}={text[:40]!r}: expected a number from 0 to 1e9")
    return value


class SlowTransfer(OSError):
    """Raised on the socket when a limit is hit. Not a TimeoutError: urllib3 turns those
    into a bare "Read timed out", and the user should learn which limit it was."""


class Budget:
    """The limits of one exchange in progress (see the module docstring)."""

    def __init__(self, limits: Limits, expected: int,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.limits = limits
        self.clock = clock
        now = clock()
        self.deadline: float | None = None
        self.total = 0.0
        if limits.speed_limit > 0 and limits.deadline_base > 0:
            self.total = limits.deadline_base + max(0, expected) / limits.speed_limit
            self.deadline = now + self.total
        self._phase = "wait"
        self._phase_deadline = self._header_deadline(now)
        self._window_start = now
        self._window_bytes = 0

    def sending(self) -> None:
        self._enter("send")

    def reading(self) -> None:
        """A read after sending means the request is out: the server may think (hash,
        move a blob) before it answers; only the header wait bound and the overall
        deadline apply until the body flows (:meth:`receiving`)."""
        if self._phase == "send":
            self._enter("wait")

    def receiving(self) -> None:
        self._enter("body")

    def _enter(self, phase: str) -> None:
        if phase == self._phase:
            return
        now = self.clock()
        self._phase = phase
        self._window_start, self._window_bytes = now, 0
        if phase == "wait":
            self._phase_deadline = self._header_deadline(now)

    def _header_deadline(self, now: float) -> float | None:
        return now + self.limits.deadline_base if self.limits.deadline_base > 0 else None

    def _speed_checked(self) -> bool:
        return self._phase != "wait" and self.limits.speed_limit > 0

    def check(self) -> None:
        """Raise SlowTransfer if a limit is exceeded; start the next speed window."""
        now = self.clock()
        if self.deadline is not None and now >= self.deadline:
            raise SlowTransfer(f"no complete answer within the {self.total:.0f}s deadline")
        if self._phase == "wait" and self._phase_deadline is not None and \
                now >= self._phase_deadline:
            raise SlowTransfer(f"no response headers within {self.limits.deadline_base:g}s")
        if self._speed_checked() and now - self._window_start >= self.limits.speed_time:
            need = self.limits.speed_limit * self.limits.speed_time
            if self._window_bytes < need:
                raise SlowTransfer(f"transfer below {self.limits.speed_limit} bytes/s for "
                                   f"{self.limits.speed_time:g}s")
            self._window_start, self._window_bytes = now, 0

    def wait(self, timeout: float | None) -> tuple[float | None, bool]:
        """How long the next blocking call may take, and whether that bound is ours
        (then a timeout means "check again") rather than the socket's read timeout."""
        now = self.clock()
        bounds = []
        if self.deadline is not None:
            bounds.append(self.deadline - now)
        if self._phase == "wait":
            if self._phase_deadline is not None:
                bounds.append(self._phase_deadline - now)
        elif self._speed_checked():
            bounds.append(self._window_start + self.limits.speed_time - now)
        if not bounds:
            return timeout, False
        ours = max(min(bounds), _MIN_WAIT)
        if timeout is not None and timeout <= ours:
            return timeout, False
        return ours, True

    def account(self, count: int) -> None:
        self._window_bytes += count

    def wait_left(self) -> float | None:
        """Seconds left for the current wait (a connect, a TLS handshake, headers)."""
        bounds = [b for b in (self.deadline, self._phase_deadline) if b is not None]
        return max(min(bounds) - self.clock(), _MIN_WAIT) if bounds else None


class Watchdog:
    """Shuts ``sock`` down when ``seconds`` pass: for a blocking step that cannot be
    sliced like reads are (the TLS handshake, run by the ssl module on the bare
    socket), so a server trickling its handshake is cut off too."""

    def __init__(self, sock: socket.socket, seconds: float) -> None:
        self.seconds = seconds
        self.fired = False
        # A duplicate: ssl's wrap_socket detaches ``sock`` (and closes its fd when the
        # handshake fails), and shutdown() acts on the socket behind either fd.
        self._dup: socket.socket | None = sock.dup()
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._fire)
        self._timer.daemon = True
        self._timer.start()

    def _fire(self) -> None:
        with self._lock:
            if self._dup is None:
                return
            self.fired = True
            with contextlib.suppress(OSError):
                self._dup.shutdown(socket.SHUT_RDWR)

    def cancel(self) -> None:
        self._timer.cancel()
        with self._lock:
            if self._dup is not None:
                self._dup.close()
                self._dup = None

    def error(self, step: str) -> SlowTransfer:
        return SlowTransfer(f"no {step} within {self.seconds:.3g}s")


def watchdog(sock: socket.socket, seconds: float | None = None) -> Watchdog | None:
    """A Watchdog for the current budget's wait (or ``seconds``); None if unbounded."""
    if seconds is None:
        budget = current()
        seconds = budget.wait_left() if budget is not None else None
    return Watchdog(sock, seconds) if seconds is not None and seconds > 0 else None


_current = threading.local()


def current() -> Budget | None:
    return getattr(_current, "budget", None)


@contextlib.contextmanager
def active(budget: Budget | None) -> Iterator[None]:
    """Make ``budget`` the one the sockets of this thread enforce, for the block."""
    previous = current()
    _current.budget = budget
    try:
        yield
    finally:
        _current.budget = previous


def guarded(budget: Budget | None, chunks: Iterator[bytes]) -> Iterator[bytes]:
    """Iterate ``chunks`` (a body being read) with ``budget`` active during each read
    only: between chunks the caller may make other requests with their own budgets."""
    while True:
        with active(budget):
            try:
                chunk = next(chunks)
            except StopIteration:
                return
        yield chunk


class BudgetSocket:
    """A connected socket (plain or TLS) whose reads and writes honour the current
    thread's Budget; without one it behaves as the socket it wraps."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock
        self._timeout = sock.gettimeout()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    def settimeout(self, timeout: float | None) -> None:
        self._timeout = timeout
        self._sock.settimeout(timeout)

    def gettimeout(self) -> float | None:
        return self._timeout

    def fileno(self) -> int:
        return self._sock.fileno()

    def makefile(self, mode: str = "r", buffering: int | None = None, **kwargs: Any) -> Any:
        if mode not in ("rb", "br"):
            return self._sock.makefile(mode, buffering, **kwargs)  # type: ignore[call-overload]
        # As socket.makefile: the file holds a reference, so http.client may close the
        # connection (Connection: close) while the response is still being read.
        self._sock._io_refs += 1  # type: ignore[attr-defined]
        return io.BufferedReader(_Reader(self), buffer_size=buffering or io.DEFAULT_BUFFER_SIZE)

    def sendall(self, data: Any) -> None:
        budget = current()
        if budget is None:
            self._sock.sendall(data)
            return
        budget.sending()
        view = memoryview(data).cast("B")
        while view:
            piece = view[:_SEND_SLICE]
            count = self.blocking(budget, lambda piece=piece: self._sock.send(piece))
            budget.account(count)
            view = view[count:]

    def release_file(self) -> None:
        self._sock._decref_socketios()  # type: ignore[attr-defined]

    def recv_into(self, buffer: Any) -> int:
        budget = current()
        if budget is None:
            return self._sock.recv_into(buffer)
        budget.reading()
        count = self.blocking(budget, lambda: self._sock.recv_into(buffer))
        budget.account(count)
        return count

    def blocking(self, budget: Budget, call: Callable[[], int]) -> int:
        """``call`` in slices short enough to check ``budget`` between them."""
        while True:
            budget.check()
            wait, ours = budget.wait(self._timeout)
            self._sock.settimeout(wait)
            try:
                return call()
            except TimeoutError:
                if not ours:
                    raise
            finally:
                self._sock.settimeout(self._timeout)


class _Reader(io.RawIOBase):
    """What ``makefile("rb")`` buffers: socket.SocketIO's job, through the budget."""

    def __init__(self, sock: BudgetSocket) -> None:
        super().__init__()
        self._sock = sock

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        while True:
            try:
                return self._sock.recv_into(buffer)
            except InterruptedError:
                continue

    def fileno(self) -> int:
        return self._sock.fileno()

    def close(self) -> None:
        if not self.closed:
            super().close()
            self._sock.release_file()

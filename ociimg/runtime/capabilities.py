"""Linux capabilities: spec names ↔ numbers, the five sets, and applying them.

``capability_sets()`` is pure; the ``apply``/``drop`` functions make the syscalls.
The container init must call them in runc's order (``finalizeNamespace`` in
runc's ``libcontainer/init_linux.go``)::

    sets = capability_sets(spec["process"].get("capabilities"))
    drop_bounding(sets)          # needs CAP_SETPCAP, which setuid may take away
    prepare_setuid()             # PR_SET_KEEPCAPS=1: keep permitted across setuid
    os.setgroups(...); os.setgid(...); os.setuid(...)
    finish_setuid()              # PR_SET_KEEPCAPS=0
    apply_capabilities(sets)     # capset(E, P, I) then ambient

Unknown capability names are ignored with a warning, as runc does, and so are names
this kernel does not know (above /proc/sys/kernel/cap_last_cap); ``CapSets.ignored``
lists them so the caller can report them.
"""

from __future__ import annotations

import errno

from ociimg.errors import ContainerError
from ociimg.oskit import linux
from ociimg.runtime.lazylog import get_logger
from ociimg.runtime.records import record

log = get_logger(__name__)

# linux/capability.h, in number order.
CAPABILITY_NAMES: tuple[str, ...] = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND", "CAP_AUDIT_READ",
    "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
CAPABILITIES: dict[str, int] = {name: i for i, name in enumerate(CAPABILITY_NAMES)}
CAP_LAST = len(CAPABILITY_NAMES) - 1  # CAP_CHECKPOINT_RESTORE = 40

SET_NAMES = ("bounding", "effective", "permitted", "inheritable", "ambient")


@record(frozen=True, slots=True)
class CapSets:
    """The five sets as capability numbers; ``ignored`` = names we could not use."""

    bounding: frozenset[int]
    effective: frozenset[int]
    permitted: frozenset[int]
    inheritable: frozenset[int]
    ambient: frozenset[int]
    ignored: tuple[str, ...] = ()
    last_cap: int = CAP_LAST  # the kernel's cap_last_cap when the sets were made


def cap_number(name: str) -> int | None:
    """``CAP_CHOWN``/``chown``/``cap_chown`` → 0; None for an unknown name."""
    key = name.strip().upper()
    if not key.startswith("CAP_"):
        key = "CAP_" + key
    return CAPABILITIES.get(key)


def cap_name(number: int) -> str:
    return CAPABILITY_NAMES[number] if 0 <= number <= CAP_LAST else f"CAP_{number}"


def mask_of(caps: frozenset[int] | set[int]) -> int:
    mask = 0
    for cap in caps:
        mask |= 1 << cap
    return mask


def caps_of(mask: int) -> frozenset[int]:
    return frozenset(i for i in range(64) if mask >> i & 1)


def capability_sets(spec_caps: dict | None, *, last_cap: int | None = None) -> CapSets:
    """Translate ``process.capabilities`` into numbers.

    Pure when ``last_cap`` is given; None reads the kernel's cap_last_cap (do it
    before pivot_root). A missing object or set means the empty set (runtime-spec:
    each list is optional). Unknown names, and names above ``last_cap``, are skipped
    and reported in ``ignored``. ``drop_bounding`` drops every number up to
    ``last_cap`` that is not in bounding, so a kernel's newer capabilities go too.
    """
    if last_cap is None:
        last_cap = kernel_last_cap()
    if spec_caps is None:
        spec_caps = {}
    if not isinstance(spec_caps, dict):
        raise ContainerError("process.capabilities: not an object",
                             hint="give lists of names under bounding/effective/permitted/...")
    ignored: list[str] = []
    sets: dict[str, frozenset[int]] = {}
    for set_name in SET_NAMES:
        names = spec_caps.get(set_name) or []
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise ContainerError(f"process.capabilities.{set_name}: not a list of names",
                                 hint='write e.g. ["CAP_CHOWN", "CAP_KILL"]')
        numbers = set()
        for name in names:
            number = cap_number(name)
            if number is None or number > last_cap:
                if name not in ignored:
                    ignored.append(name)
                continue
            numbers.add(number)
        sets[set_name] = frozenset(numbers)
    if ignored:
        log.warning("ignoring unknown or unavailable capabilities: %s", ", ".join(ignored))
    return CapSets(ignored=tuple(ignored), last_cap=last_cap, **sets)


def kernel_last_cap(proc: str = "/proc/sys/kernel/cap_last_cap") -> int:
    try:
        with open(proc) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return CAP_LAST


def drop_bounding(sets: CapSets) -> None:
    """PR_CAPBSET_DROP every capability the kernel knows that is not in ``bounding``.

    Needs CAP_SETPCAP in the effective set, so it must run before setuid. Reads
    nothing from /proc (the limit came with ``sets``): safe after pivot_root.
    """
    for cap in range(max(sets.last_cap, CAP_LAST) + 1):
        if cap in sets.bounding:
            continue
        try:
            linux.prctl(linux.PR_CAPBSET_DROP, cap)
        except OSError as exc:
            # EINVAL: the kernel does not know this number (gocapability ignores it too).
            if exc.errno != errno.EINVAL:
                raise ContainerError(f"drop {cap_name(cap)} from the bounding set: {exc}",
                                     hint="the runtime needs CAP_SETPCAP") from exc


def prepare_setuid() -> None:
    """Keep the permitted set across the coming setuid (PR_SET_KEEPCAPS=1)."""
    linux.prctl(linux.PR_SET_KEEPCAPS, 1)


def finish_setuid() -> None:
    """Clear PR_SET_KEEPCAPS again once the ids are set (runc does the same)."""
    linux.prctl(linux.PR_SET_KEEPCAPS, 0)


def apply_capabilities(sets: CapSets | dict | None) -> list[str]:
    """capset(effective, permitted, inheritable), then the ambient set.

    Accepts the spec's ``process.capabilities`` dict too. Returns the names of the
    ambient capabilities the kernel refused to raise: an ambient capability must be
    in both permitted and inheritable, and runc only warns about it.
    """
    if not isinstance(sets, CapSets):
        sets = capability_sets(sets, last_cap=kernel_last_cap())
    try:
        linux.capset(mask_of(sets.effective), mask_of(sets.permitted),
                     mask_of(sets.inheritable))
    except OSError as exc:
        raise ContainerError(f"set capabilities: {exc}",
                             hint="effective must be a subset of permitted, and permitted "
                                  "may only shrink") from exc
    return apply_ambient(sets.ambient)


def apply_ambient(ambient: frozenset[int]) -> list[str]:
    refused: list[str] = []
    try:
        linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_CLEAR_ALL)
    except OSError as exc:
        # Kernels before 4.3 have no ambient set; runc ignores that as well.
        log.warning("cannot clear ambient capabilities: %s", exc)
        return [cap_name(c) for c in sorted(ambient)]
    for cap in sorted(ambient):
        try:
            linux.prctl(linux.PR_CAP_AMBIENT, linux.PR_CAP_AMBIENT_RAISE, cap)
        except OSError as exc:
            log.warning("cannot raise ambient %s: %s", cap_name(cap), exc)
            refused.append(cap_name(cap))
    return refused


def current_capabilities(status: str | None = None) -> dict[str, frozenset[int]]:
    """The five sets of this process, read from /proc/self/status (or given text)."""
    if status is None:
        with open("/proc/self/status") as f:
            status = f.read()
    keys = {"CapInh": "inheritable", "CapPrm": "permitted", "CapEff": "effective",
            "CapBnd": "bounding", "CapAmb": "ambient"}
    result: dict[str, frozenset[int]] = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in keys:
            result[keys[key]] = caps_of(int(value.strip(), 16))
    return result

"""Container networking: network modes, bridge networks through a backend (netavark),
published ports, and the /etc files every container gets.

Create time (:func:`prepare`) decides the namespace the runtime uses and writes the
container's ``hosts``, ``hostname`` and ``resolv.conf``, bind-mounted over the image's.
Start time (:func:`setup`, bridge mode only) makes the netns, allocates addresses and
attaches it; :func:`teardown` undoes all of that and is safe to repeat.

What is attached is recorded host-wide in ``STATE_DIR/attached/<id>.json`` (the exact
backend document, so teardown can be replayed after any crash) next to a lock file that
the container's monitor holds for its whole life: a record whose lock nobody holds
belongs to a container whose monitor is gone, and :func:`reap` tears it down.
"""

from __future__ import annotations

import contextlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ociimg.errors import ContainerError, InvalidArgument

TYPE_CHECKING = False  # `ociimg ps` imports the manager, hence this: import the rest lazily
if TYPE_CHECKING:
    from ociimg.network import config
    from ociimg.network.backend import Attachment, Backend

STATE_DIR = Path("/run/ociimg/net")  # host-wide, like the bridges and rules it describes

RECORD = "network.json"  # in the container's directory
ETC_FILES = ("hosts", "hostname", "resolv.conf")
MODES = ("bridge", "none", "host", "container")


@dataclass(frozen=True)
class PortMapping:
    container_port: int
    host_port: int = 0            # 0: a free port is picked at create time
    protocol: str = "tcp"
    host_ip: str = ""             # "": every address of the host

    def __str__(self) -> str:
        return f"{self.container_port}/{self.protocol} -> " \
               f"{self.host_ip or '0.0.0.0'}:{self.host_port}"


@dataclass
class NetworkOptions:
    mode: str = "bridge"          # bridge | none | host | container
    networks: list[str] = field(default_factory=list)  # bridge: [] is the default network
    container: str | None = None  # container mode: the container whose netns is joined
    aliases: list[str] = field(default_factory=list)
    ports: list[PortMapping] = field(default_factory=list)
    publish_all: bool = False     # -P: every EXPOSEd port on a free host port
    dns: list[str] = field(default_factory=list)
    dns_search: list[str] = field(default_factory=list)
    dns_options: list[str] = field(default_factory=list)
    add_hosts: list[tuple[str, str]] = field(default_factory=list)  # (name, ip)
    hostname: str | None = None
    mac: str | None = None
    ip: str | None = None


@dataclass(frozen=True)
class Prepared:
    """What the bundle needs: the runtime's network mode or netns path, the bind mounts
    of the /etc files and the environment additions."""
    bundle_network: str                           # "none" | "host" | "private"
    netns_path: str | None
    mounts: list[tuple[str, str, bool]]
    env: list[str]


def default_backend() -> Backend:
    from ociimg.network.netavark import NetavarkBackend
    return NetavarkBackend(str(STATE_DIR / "netavark"))


# --- create ---------------------------------------------------------------------------


def prepare(root: Path, cdir: Path, cid: str, name: str | None, hostname: str,
            options: NetworkOptions, exposed: list[str], joined: tuple[str, Path] | None,
            *, mount_dir: Path | None = None) -> Prepared:
    """Write the container's network record and /etc files into ``cdir`` (bind-mounted
    from ``mount_dir``, where ``cdir`` is renamed to once whole). ``joined``: for
    container mode, the other container's netns path and directory."""
    from ociimg.network import config, etcfiles, netns
    etcfiles.check_hostname(hostname)
    mode = options.mode
    if mode not in MODES:
        raise InvalidArgument(f"unknown network mode {mode!r}",
                              hint="use bridge, none, host, container:NAME or a network name")
    if mode != "bridge" and (options.ports or options.publish_all):
        raise InvalidArgument(f"ports cannot be published with --network {mode}",
                              hint="publish ports on a bridge network (the default)")
    record: dict[str, Any] = {"mode": mode, "name": name, "hostname": hostname,
                              "aliases": list(options.aliases), "ip": options.ip,
                              "mac": options.mac, "dns": list(options.dns),
                              "dnsSearch": list(options.dns_search),
                              "dnsOptions": list(options.dns_options),
                              "addHosts": [list(h) for h in options.add_hosts]}
    netns_path = None
    if mode == "bridge":
        nets = [config.load(root, n) for n in dict.fromkeys(options.networks or ["bridge"])]
        if options.ip and len(nets) > 1:
            raise InvalidArgument("--ip needs a single network", hint="give one --network")
        record["networks"] = [n.name for n in nets]
        record["ports"] = [asdict(p) for p in _resolve_ports(options, exposed)]
        netns_path = netns.path_for(cid)
        record["netns"] = netns_path
    record["mountpoints"] = _missing_in_image(cdir / "rootfs")
    record["etcTimes"] = _etc_times(cdir / "rootfs") if record["mountpoints"] else None
    mounts = _write_etc_files(cdir, record, joined, Path(mount_dir or cdir))
    if mode == "container":
        assert joined is not None
        netns_path = joined[0]
        record["netns"] = netns_path
        record["container"] = options.container
    _write_json(cdir / RECORD, record)
    bundle_network = {"host": "host", "none": "none"}.get(mode, "private")
    return Prepared(bundle_network, netns_path, mounts, [f"HOSTNAME={hostname}"])


def _write_etc_files(cdir: Path, record: dict[str, Any], joined: tuple[str, Path] | None,
                     mount_dir: Path) -> list[tuple[str, str, bool]]:
    _write(cdir / "hostname", record["hostname"] + "\n")
    if joined is not None:  # podman: a container sharing a netns shares its files too
        return [(str(joined[1] / f), f"/etc/{f}", False) for f in ("hosts", "resolv.conf")] \
            + [(str(mount_dir / "hostname"), "/etc/hostname", False)]
    _write(cdir / "hosts", _hosts_text(record, []))
    _write(cdir / "resolv.conf", _resolv_text(record, []))
    return [(str(mount_dir / f), f"/etc/{f}", False) for f in ETC_FILES]


def _missing_in_image(rootfs: Path) -> list[str]:
    """Which of /etc, /etc/hosts, ... the runtime will have to create as mountpoints:
    removed again when the container exits (docker keeps them in an init layer), so
    diff, commit and export never show them."""
    from ociimg.oskit.paths import resolve_in_root
    try:
        rootfd = os.open(rootfs, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    missing = []
    try:
        for name in ("", *ETC_FILES):
            try:
                os.close(resolve_in_root(rootfd, f"/etc/{name}", follow_last=False))
            except FileNotFoundError:
                missing.append(name)
            except OSError:
                pass  # there, in some shape: never ours to remove
    finally:
        os.close(rootfd)
    return missing


def _etc_times(rootfs: Path) -> list[int] | None:
    try:
        st = os.stat(Path(rootfs) / "etc", follow_symlinks=False)
    except OSError:
        return None
    return [st.st_atime_ns, st.st_mtime_ns]


def remove_mountpoints(cdir: Path) -> None:
    """Remove the empty mountpoint files (and /etc) the runtime made for the /etc files."""
    from ociimg.oskit.mountpoints import remove_mount_points
    record = read_record(cdir) or {}
    names = [n for n in record.get("mountpoints") or [] if n in ("", *ETC_FILES)]
    if not names:
        return
    times = record.get("etcTimes")
    # /etc itself made: it goes (if empty); else it had entries come and go: its times back
    keep_times = {"/etc": (times[0], times[1])} if times and "" not in names else {}
    remove_mount_points(Path(cdir) / "rootfs", [f"/etc/{n}".rstrip("/") for n in names],
                        keep_times)


def _hosts_text(record: dict[str, Any], attached: list[Attachment]) -> str:
    from ociimg.network import etcfiles
    return etcfiles.hosts(record["hostname"], record.get("name"), [a.ip for a in attached],
                          [(h, ip) for h, ip in record.get("addHosts") or []],
                          gateway=attached[0].gateway if attached else None)


def _resolv_text(record: dict[str, Any], attached: list[Attachment]) -> str:
    from ociimg.network import etcfiles
    servers, search, options = etcfiles.host_resolver(keep_loopback=record["mode"] == "host")
    aardvark = [s for a in attached for s in a.dns_servers]
    if aardvark:  # it forwards other names to --dns, else to the host's upstreams (podman)
        servers = aardvark
        search = [d for a in attached for d in a.dns_search] + search
    else:
        servers = record.get("dns") or servers
    search = record.get("dnsSearch") or search
    options = record.get("dnsOptions") or options
    return etcfiles.resolv_conf(list(dict.fromkeys(servers)), list(dict.fromkeys(search)),
                                options)


def _resolve_ports(options: NetworkOptions, exposed: list[str]) -> list[PortMapping]:
    ports = list(options.ports)
    if options.publish_all:
        have = {(p.container_port, p.protocol) for p in ports}
        for spec in exposed:
            port, _, proto = spec.partition("/")
            with contextlib.suppress(ValueError):
                key = (int(port), proto or "tcp")
                # The image's list: a port out of range is skipped, as a bad -p is refused.
                if key not in have and key[1] in ("tcp", "udp") and 0 < key[0] <= 65535:
                    ports.append(PortMapping(key[0], 0, key[1]))
                    have.add(key)
    out = []
    seen: set[tuple[str, int, str]] = set()
    for p in ports:
        if p.host_port == 0:
            p = PortMapping(p.container_port, _free_port(p.host_ip, p.protocol), p.protocol,
                            p.host_ip)
        key = (p.host_ip, p.host_port, p.protocol)
        if key in seen:
            raise InvalidArgument(f"host port {p.host_port}/{p.protocol} is published twice",
                                  hint="give each -p its own host port")
        seen.add(key)
        out.append(p)
    return out


def _free_port(host_ip: str, protocol: str) -> int:
    """A port the kernel considers free now (what podman does for ``-p CTRPORT``)."""
    import socket
    kind = socket.SOCK_DGRAM if protocol == "udp" else socket.SOCK_STREAM
    with socket.socket(socket.AF_INET, kind) as s:  # noqa: SIM117
        s.bind((host_ip or "0.0.0.0", 0))
        return int(s.getsockname()[1])


# --- start and stop -------------------------------------------------------------------


def setup(cdir: Path, cid: str, root: Path) -> int | None:
    """Attach a bridge-mode container; returns the fd of its held attachment lock, which
    the container's monitor keeps open for its life (None for other modes)."""
    record = read_record(cdir)
    if not record or record.get("mode") != "bridge":
        return None
    reap()  # cleanup at the next start: what killed monitors left behind
    lock = _lock(cid, blocking=True)
    assert lock is not None
    try:
        _attach(cdir, cid, root, record)
    except BaseException:
        with contextlib.suppress(OSError, ContainerError):
            _detach(cid)
        _unlock(cid, lock)
        raise
    return lock


def _attach(cdir: Path, cid: str, root: Path, record: dict[str, Any]) -> None:
    from ociimg.network import config, netns
    _write_json(_attached_dir() / f"{cid}.json", {"id": cid, "dir": str(cdir)})
    netns.remove(cid)  # a leftover of an earlier start that was never torn down
    path = netns.create(cid)
    nets = [config.load(root, n) for n in record["networks"]]
    _check_ports_free(cid, record.get("ports") or [])
    plan = _plan(cid, record, nets)
    _write_json(_attached_dir() / f"{cid}.json", {"id": cid, "dir": str(cdir),
                                                  "netns": path, "plan": plan})
    attached = default_backend().setup(path, plan)
    record["attached"] = [asdict(a) for a in attached]
    _rewrite(cdir, record)


def _check_ports_free(cid: str, ports: list[dict[str, Any]]) -> None:
    """A host port another running container publishes is refused (docker: "port is
    already allocated"): two DNAT rules for one port would shadow each other silently."""
    if not ports:
        return
    base = _attached_dir()
    for path in base.glob("*.json"):
        if path.stem == cid:
            continue
        plan = (_read_json(path) or {}).get("plan") or {}
        for theirs in plan.get("port_mappings") or []:
            for p in ports:
                same_port = (p["host_port"], p["protocol"]) == (theirs["host_port"],
                                                                theirs["protocol"])
                ips = {p["host_ip"], theirs["host_ip"]}
                if same_port and ("" in ips or len(ips) == 1):
                    raise ContainerError(
                        f"host port {p['host_port']}/{p['protocol']} is already published by "
                        f"container {path.stem[:12]}",
                        hint="pick another host port, or stop that container")


def _plan(cid: str, record: dict[str, Any], nets: list[config.Network],
          first_index: int = 0) -> dict[str, Any]:
    from ociimg.network import ipam
    loops = set(record.get("dns") or []) & {n.gateway for n in nets if n.dns}
    if loops:  # aardvark would forward to itself (netavark's check_for_dns_loop)
        raise InvalidArgument(f"--dns {sorted(loops)[0]} is the network's own DNS server",
                              hint="give an upstream resolver, or leave --dns out")
    per_net = {}
    for i, net in enumerate(nets, start=first_index):
        ip = ipam.allocate(net.bridge, str(net.subnet), net.gateway, cid,
                           wanted=record.get("ip"))
        opts: dict[str, Any] = {"interface_name": f"eth{i}", "static_ips": [ip]}
        if net.dns:
            opts["aliases"] = list(dict.fromkeys(
                [cid[:12], *record["aliases"]]))
        if record.get("mac") and i == 0:
            opts["static_mac"] = record["mac"]
        per_net[net.name] = opts
    ports = [{"host_ip": p["host_ip"], "container_port": p["container_port"],
              "host_port": p["host_port"], "protocol": p["protocol"], "range": 1}
             for p in record.get("ports") or []]
    plan: dict[str, Any] = {"container_id": cid, "container_name": record.get("name") or
                            cid[:12], "networks": per_net,
                            "network_info": {n.name: n.doc for n in nets}}
    if ports:
        plan["port_mappings"] = ports
    if record.get("dns"):
        plan["dns_servers"] = list(record["dns"])
    return plan


def connect(root: Path, cdir: Path, cid: str, name: str, aliases: list[str],
            running: bool) -> None:
    """Attach another network (``network connect``): at once when ``running``, else
    from the next start."""
    from ociimg.network import config
    record = _bridge_record(cdir, name)
    net = config.load(root, name)
    if net.name in record["networks"]:
        raise InvalidArgument(f"container is already on network {net.name}",
                              hint="see ociimg network inspect " + net.name)
    with _editing(cid):
        record["aliases"] = list(dict.fromkeys([*record["aliases"], *aliases]))
        if running:
            doc = _read_json(_attached_dir() / f"{cid}.json") or {}
            if not doc.get("plan"):
                raise ContainerError("the container has no network attachment to extend",
                                     hint="start it first")
            used = {o["interface_name"] for o in doc["plan"]["networks"].values()}
            free = next(i for i in range(len(used) + 1) if f"eth{i}" not in used)
            one = _plan(cid, {**record, "ip": None, "ports": []}, [net], first_index=free)
            try:
                attached = default_backend().setup(doc["netns"], one)
            except BaseException:
                from ociimg.network import ipam
                ipam.release(cid, net.bridge)
                raise
            doc["plan"]["networks"].update(one["networks"])
            doc["plan"]["network_info"].update(one["network_info"])
            _write_json(_attached_dir() / f"{cid}.json", doc)
            record["attached"] = [*record.get("attached", []), *map(asdict, attached)]
        record["networks"].append(net.name)
        _rewrite(cdir, record)


def disconnect(root: Path, cdir: Path, cid: str, name: str) -> None:
    """Detach one network (``network disconnect``); the last one and one that carries
    published ports stay (docker refuses those too, in effect)."""
    from ociimg.network import config, ipam
    record = _bridge_record(cdir, name)
    net = config.load(root, name)
    if net.name not in record["networks"]:
        raise InvalidArgument(f"container is not on network {net.name}",
                              hint="see ociimg network inspect " + net.name)
    if len(record["networks"]) == 1 or (record.get("ports") and
                                        record["networks"][0] == net.name):
        raise InvalidArgument(f"network {net.name} is the container's last network or "
                              "carries its published ports", hint="remove the container "
                              "instead, or connect another network first")
    with _editing(cid):
        doc = _read_json(_attached_dir() / f"{cid}.json") or {}
        if doc.get("plan") and net.name in doc["plan"]["networks"]:
            plan = doc["plan"]
            one = {"container_id": cid, "container_name": plan["container_name"],
                   "networks": {net.name: plan["networks"].pop(net.name)},
                   "network_info": {net.name: plan["network_info"].pop(net.name)}}
            default_backend().teardown(doc["netns"], one)
            ipam.release(cid, net.bridge)
            _write_json(_attached_dir() / f"{cid}.json", doc)
        record["networks"].remove(net.name)
        record["attached"] = [a for a in record.get("attached", [])
                              if a["network"] != net.name]
        _rewrite(cdir, record)


def _bridge_record(cdir: Path, name: str) -> dict[str, Any]:
    from ociimg.network import config
    if name != "bridge":
        config.check_name(name)
    record = read_record(cdir)
    if not record or record.get("mode") != "bridge":
        raise InvalidArgument("only containers on bridge networks can connect or disconnect",
                              hint="the container runs with --network none, host or "
                                   "container:")
    return record


@contextlib.contextmanager
def _editing(cid: str) -> Any:
    from ociimg.store import locks
    _attached_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    with locks.locked(_attached_dir() / f".{cid}.edit.lock"):
        yield
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_attached_dir() / f".{cid}.edit.lock")


def _rewrite(cdir: Path, record: dict[str, Any]) -> None:
    from ociimg.network.backend import Attachment
    _write_json(cdir / RECORD, record)
    attached = [Attachment(**a) for a in record.get("attached") or []]
    _write_in_place(cdir / "hosts", _hosts_text(record, attached))
    _write_in_place(cdir / "resolv.conf", _resolv_text(record, attached))


def teardown(cid: str, *, locked: bool = False, cdir: Path | None = None) -> None:
    """Detach ``cid`` if it is attached: backend teardown from the recorded plan, address
    leases, netns. ``locked``: the caller (the container's monitor) holds the lock.
    ``cdir`` (the program has exited): also remove the /etc mountpoints it needed."""
    from ociimg.network import netns
    if cdir is not None:
        remove_mountpoints(cdir)
    if not (_attached_dir() / f"{cid}.json").exists() and not os.path.exists(
            netns.path_for(cid)):
        return
    lock = None if locked else _lock(cid, blocking=True)
    try:
        _detach(cid)
    finally:
        if lock is None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(_attached_dir() / f".{cid}.lock")
        _unlock(cid, lock)


def _detach(cid: str) -> None:
    from ociimg.network import ipam, netns
    rec_path = _attached_dir() / f"{cid}.json"
    doc = _read_json(rec_path) or {}
    errors = []
    if doc.get("plan"):
        try:
            default_backend().teardown(doc["netns"], doc["plan"])
        except ContainerError as exc:
            errors.append(exc)
    ipam.release(cid)  # even when the backend failed: a leaked lease is lost for good
    netns.remove(cid)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(rec_path)
    if errors:
        raise errors[0]


def reap() -> list[str]:
    """Tear down every attachment whose monitor is gone (killed, crashed, host state
    left behind); the ids torn down."""
    done = []
    base = _attached_dir()
    ids = {p.stem for p in base.glob("*.json")} if base.is_dir() else set()
    # Only recorded ids: the record is written before the netns is made and removed
    # after it is gone, so every netns of ours has one.
    for cid in sorted(ids):
        lock = _lock(cid, blocking=False)
        if lock is None:
            continue  # its monitor (or a setup) holds it: alive
        try:
            with contextlib.suppress(ContainerError, OSError):
                _detach(cid)
            done.append(cid)
        finally:
            _unlock(cid, lock)
    return done + _reap_orphan_netns(ids)


def _reap_orphan_netns(recorded: set[str]) -> list[str]:
    """A netns file with no record is a leftover (the record is written first and
    removed last, both under the lock): removed, once the lock shows nobody is making
    it right now."""
    from ociimg.network import netns
    try:
        names = set(os.listdir(netns.NETNS_DIR)) - recorded
    except OSError:
        return []
    done = []
    for cid in sorted(n for n in names if len(n) == 64 and n.isalnum() and n.islower()):
        lock = _lock(cid, blocking=False)
        if lock is None:
            continue
        try:
            if not (_attached_dir() / f"{cid}.json").exists():
                with contextlib.suppress(ContainerError, OSError):
                    netns.remove(cid)
                    done.append(cid)
        finally:
            _unlock(cid, lock)
    return done


def attached_ids() -> list[str]:
    base = _attached_dir()
    return sorted(p.stem for p in base.glob("*.json")) if base.is_dir() else []


def _attached_dir() -> Path:
    return STATE_DIR / "attached"


def _lock(cid: str, *, blocking: bool) -> int | None:
    from ociimg.errors import LockTimeout
    from ociimg.store import locks
    _attached_dir().mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        return locks.acquire_lock(_attached_dir() / f".{cid}.lock", blocking=blocking)
    except LockTimeout:
        return None


def _unlock(cid: str, fd: int | None) -> None:
    """Remove the lock file first: a waiter then finds it gone and starts over."""
    if fd is None:
        return
    if not (_attached_dir() / f"{cid}.json").exists():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_attached_dir() / f".{cid}.lock")
    os.close(fd)


# --- records ----------------------------------------------------------------------------


def read_record(cdir: Path) -> dict[str, Any] | None:
    return _read_json(Path(cdir) / RECORD)


def published(cdir: Path) -> list[PortMapping]:
    record = read_record(cdir) or {}
    return [PortMapping(**p) for p in record.get("ports") or []]


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        with open(path, "rb") as f:
            doc = json.loads(f.read(8 << 20))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _write_json(path: Path, doc: dict[str, Any]) -> None:
    from ociimg.fsutil import atomic_write
    atomic_write(path, json.dumps(doc, indent=2).encode(), mode=0o600)


def _write(path: Path, text: str) -> str:
    from ociimg.fsutil import atomic_write
    atomic_write(path, text.encode(), mode=0o644)
    return str(path)


def _write_in_place(path: Path, text: str) -> None:
    """Same inode: a running container's bind mount of it sees the new text."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, "w") as f:
        f.write(text)


__all__ = ["MODES", "NetworkOptions", "PortMapping", "Prepared", "attached_ids", "connect",
           "disconnect", "prepare",
           "published", "read_record", "reap", "remove_mountpoints", "setup", "teardown"]

"""Attacks on a process while it enters a container (as root, real kernel, busybox payload):
what a process already inside can reach of an `exec` that joins (CVE-2019-5736 class), a
forged pid on the exec sync socket, a cwd through a leaked host fd (CVE-2024-21626), and a
bundle edited after create."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conftest import need
from tests.integration.intruder import pidfd_getfd, proc_status
from tests.integration.runtime_helpers import (
    REPO,
    RUNTIME,
    base_config,
    make_bundle,
    runtime,
    write_config,
)

# A PATH that names a missing directory 40,000 times before /bin (128 KiB, the kernel's
# limit for one string): looking the program up takes the joining process a while after
# it dropped to the container's credentials, the window an attacker inside races for.
SLOW_PATH = "PATH=" + ":".join(["/m"] * 40000) + ":/bin"
SECRET = "ociimg-host-secret-3f9c"


def start_sleeper(bundle: Path, state_root: Path, cid: str = "c1", **overrides: object) -> dict:
    config = base_config(["sleep", "1000"], **overrides)
    write_config(bundle, config)
    runtime(state_root, "run", "-d", "-b", str(bundle), cid, check=True)
    return config


def init_pid(state_root: Path, cid: str = "c1") -> int:
    return json.loads(runtime(state_root, "state", cid, check=True).stdout)["pid"]


# The attacker: a shell inside the container, with the container's default capabilities
# (no CAP_SYS_PTRACE). It waits (builtins only, no fork per probe) for a python process
# whose effective capabilities have dropped to its own, i.e. the joining runtime process
# after its setuid/capset and before its execve, stops it and reads what it can of it.
ATTACKER = r"""
want=$(grep CapEff /proc/self/status | cut -f2)
echo ready > /tmp/attacker-ready
found=; n=0
while [ -z "$found" ] && [ $n -lt 200000 ]; do
  n=$((n+1))
  for d in /proc/[0-9]*; do
    name=; cap=
    while read -r k v; do
      case $k in Name:) name=$v;; CapEff:) cap=$v;; esac
    done < $d/status 2>/dev/null
    case $name in python*) [ "$cap" = "$want" ] && { found=${d#/proc/}; break; } ;; esac
  done
done
[ -n "$found" ] || { echo NOT-CAUGHT; exit 3; }
kill -STOP $found
echo "caught $found"
readlink /proc/$found/exe && echo EXE-READABLE
cat /proc/$found/environ 2>/dev/null | tr '\0' '\n' | grep OCIIMG_SECRET && echo ENV-READABLE
(exec 3<>/proc/$found/mem) 2>/dev/null && echo MEM-WRITABLE
readlink /proc/$found/fd/0 >/dev/null 2>&1 && echo FD-READABLE
kill -CONT $found
"""


def exec_until_ready(bundle: Path, state_root: Path, script: str,
                     ready: str) -> subprocess.Popen[str]:
    """`exec c1 sh -c script` in the background, returned once the script made
    /tmp/<ready> in the container (or failed: then the test fails with its output)."""
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "exec", "c1", "sh", "-c",
                             script], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, cwd=REPO)
    deadline = time.monotonic() + 30
    while not (bundle / "rootfs" / "tmp" / ready).exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise AssertionError(f"{ready} never appeared: {proc.communicate()}")
        time.sleep(0.01)
    return proc

def test_container_cannot_reach_a_joining_exec(runtime_env: tuple[Path, Path]) -> None:
    """A process inside catches `exec` between its drop to the container's credentials and
    its execve: the host interpreter (/proc/<pid>/exe), the runtime's environment, its
    memory (read-write: patch seccomp_load) and its fds must all be refused."""
    bundle, state_root = runtime_env
    start_sleeper(bundle, state_root)
    attacker = exec_until_ready(bundle, state_root, ATTACKER, "attacker-ready")
    try:
        env = dict(os.environ, OCIIMG_SECRET=SECRET)
        victim = runtime(state_root, "exec", "-e", SLOW_PATH, "c1", "sh", "-c",
                         "env | grep -c OCIIMG_SECRET; true", env=env)
        out, err = attacker.communicate(timeout=60)
    finally:
        if attacker.poll() is None:
            attacker.kill()
            attacker.wait()
    assert "caught" in out, (out, err)  # the attack ran inside the window
    for leak in ("EXE-READABLE", "ENV-READABLE", "MEM-WRITABLE", "FD-READABLE", SECRET):
        assert leak not in out, out
    # The exec'd program got exactly process.env, none of the runtime's environment.
    assert victim.returncode == 0 and victim.stdout.split() == ["0"], victim


def _joining_process(marker: str) -> int:
    """The exec's process inside the container's pid ns (two NSpid levels) while it still
    runs the runtime (its cmdline carries ``marker``)."""
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if marker.encode() not in f.read():
                    continue
        except OSError:
            continue
        if len(proc_status(int(name)).get("NSpid", "").split()) == 2:
            return int(name)
    return 0


def _slow_exec(state_root: Path, marker: str, options: list[str],
               command: list[str]) -> subprocess.Popen[str]:
    """`exec` into c1 whose joining process runs slowly (SLOW_PATH) and carries ``marker``
    in its cmdline, so an attack can find it."""
    return subprocess.Popen([*RUNTIME, "--root", str(state_root), "exec", *options,
                             "-e", SLOW_PATH, "-e", f"M={marker}", "c1", *command],
                            cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)


def _stop_joining(proc: subprocess.Popen[str], marker: str) -> int:
    """The joining process of ``proc`` (found by ``marker``), stopped with SIGSTOP so an
    attack runs inside its window; fails if ``proc`` ends or 30 s pass first."""
    deadline = time.monotonic() + 30
    joining = 0
    while not joining:
        assert time.monotonic() < deadline and proc.poll() is None, "no joining process"
        joining = _joining_process(marker)
    os.kill(joining, 19)  # SIGSTOP
    return joining


def _socket_fds(pid: int) -> list[int]:
    return [int(fd) for fd in os.listdir(f"/proc/{pid}/fd")
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:")]


def test_forged_pid_on_the_exec_socket_is_ignored(runtime_env: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """The joining process's sync socket, taken with pidfd_getfd once the runtime's first
    child has reported, carries a forged pid (a host process): `exec -d --pid-file` must
    still write the pid of the process it started."""
    bundle, state_root = runtime_env
    start_sleeper(bundle, state_root)
    host_victim = subprocess.Popen(["sleep", "1000"])
    pid_file = tmp_path / "exec.pid"
    marker = "forged-pid-marker"
    held: list[socket.socket] = []
    proc = _slow_exec(state_root, marker, ["-d", "--pid-file", str(pid_file)], ["sleep", "77"])
    try:
        joining = _stop_joining(proc, marker)  # held inside the window while we attack
        deadline = time.monotonic() + 30
        with open(f"/proc/{proc.pid}/task/{proc.pid}/children") as f:
            (first,) = (int(p) for p in f.read().split())
        # Wait until the runtime's first child has reported (old protocol: sent "pid" and
        # exited; now: said "forked" and stopped), so the forgery comes after it.
        while proc_status(first).get("State", "Z")[0] not in "TZ":
            assert time.monotonic() < deadline
            time.sleep(0.005)
        sock_fds = _socket_fds(joining)
        assert sock_fds, "the joining process holds no socket"
        for fd in sock_fds:
            # Kept open until the end: the runtime must not wait for the container to close
            # its copy.
            stolen = socket.socket(fileno=pidfd_getfd(joining, fd))
            held.append(stolen)
            for msg in ({"type": "pid", "pid": host_victim.pid}, {"type": "forked"},
                        {"type": "warnings", "messages": 5}, [1], "[" * 100000):
                stolen.send(msg.encode() if isinstance(msg, str) else json.dumps(msg).encode())
            stolen.send(b"\xff not json")
        os.kill(joining, 18)  # SIGCONT
        assert proc.wait(timeout=60) == 0, proc.communicate()
        written = int(pid_file.read_text())
        assert written != host_victim.pid
        with open(f"/proc/{written}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[:2] == [b"sleep", b"77"]
        assert host_victim.poll() is None
    finally:
        for stolen in held:
            stolen.close()
        host_victim.kill()
        host_victim.wait()
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _leaked_dir(tmp_path: Path) -> int:
    host_dir = tmp_path / "host-dir"
    host_dir.mkdir()
    (host_dir / "canary").write_text("HOST-CANARY\n")
    fd = os.open(host_dir, os.O_RDONLY | os.O_DIRECTORY)
    os.set_inheritable(fd, True)
    return fd


def test_cwd_through_a_leaked_host_fd_is_refused(runtime_env: tuple[Path, Path],
                                                 tmp_path: Path) -> None:
    """process.cwd = /proc/self/fd/N, N a host directory fd the caller leaked into the
    runtime: the container must not start there (nor anywhere outside its root)."""
    bundle, state_root = runtime_env
    fd = _leaked_dir(tmp_path)
    try:
        config = base_config(["sh", "-c", "cat canary; pwd"])
        config["process"]["cwd"] = f"/proc/self/fd/{fd}"
        write_config(bundle, config)
        proc = runtime(state_root, "run", "-b", str(bundle), "c1", pass_fds=(fd,))
        assert "HOST-CANARY" not in proc.stdout
        assert proc.returncode != 0 and "chdir" in proc.stderr, proc
        # The same fd passed on purpose (--preserve-fds) is still not a way out.
        proc = runtime(state_root, "run", "--preserve-fds", str(fd - 2), "-b", str(bundle),
                       "c1", pass_fds=(fd,))
        assert "HOST-CANARY" not in proc.stdout
        assert proc.returncode != 0 and "chdir" in proc.stderr, proc
    finally:
        os.close(fd)


def test_exec_cwd_through_a_leaked_host_fd_is_refused(runtime_env: tuple[Path, Path],
                                                      tmp_path: Path) -> None:
    bundle, state_root = runtime_env
    start_sleeper(bundle, state_root)
    fd = _leaked_dir(tmp_path)
    try:
        proc = runtime(state_root, "exec", "--cwd", f"/proc/self/fd/{fd}", "c1", "sh", "-c",
                       "cat canary; pwd", pass_fds=(fd,))
    finally:
        os.close(fd)
    assert "HOST-CANARY" not in proc.stdout
    assert proc.returncode != 0 and "chdir" in proc.stderr, proc
    # A cwd that climbs with ".." stays inside the root (and is created there).
    ok = runtime(state_root, "exec", "--cwd", "/../../tmp/../new", "c1", "pwd", check=True)
    assert ok.stdout.strip() == "/new"


def test_exec_uses_the_config_create_recorded(runtime_env: tuple[Path, Path]) -> None:
    """Editing the bundle after create (no mount/pid ns, no seccomp) must not change what
    a later exec joins or loads; the recorded copy is root-only."""
    bundle, state_root = runtime_env
    config = start_sleeper(bundle, state_root)
    pid = init_pid(state_root)
    edited = json.loads(json.dumps(config))
    edited["linux"]["namespaces"] = [{"type": "network"}]
    del edited["linux"]["seccomp"]
    write_config(bundle, edited)
    proc = runtime(state_root, "exec", "c1", "sh", "-c",
                   "grep Seccomp: /proc/self/status; readlink /proc/self/ns/mnt", check=True)
    seccomp, mnt = proc.stdout.split("\n")[:2]
    assert seccomp.split() == ["Seccomp:", "2"]
    assert mnt == os.readlink(f"/proc/{pid}/ns/mnt")
    recorded = state_root / "c1" / "config.json"
    assert stat.S_IMODE(recorded.stat().st_mode) == 0o600
    assert stat.S_IMODE((state_root / "c1").stat().st_mode) == 0o700


def _elf_interpreter(path: str) -> str:
    """PT_INTERP of an ELF64 little-endian executable."""
    with open(path, "rb") as f:
        data = f.read()
    phoff, = struct.unpack_from("<Q", data, 32)
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from(
            "<IIQQQQ", data, phoff + i * phentsize)
        if p_type == 3:
            return data[p_offset:p_offset + p_filesz].rstrip(b"\0").decode()
    raise AssertionError(f"{path} has no ELF interpreter")


# The image's "ld.so": prints readlink("/proc/self/exe"), the binary it was loaded for.
_SHOW_EXE = bytes.fromhex(
    "4881ec00100000"  # sub rsp,4096
    "b859000000"      # mov eax,89            readlink
    "488d3d21000000"  # lea rdi,[rip+path]
    "4889e6"          # mov rsi,rsp
    "baa00f0000"      # mov edx,4000
    "0f05"            # syscall
    "89c2"            # mov edx,eax
    "b801000000"      # mov eax,1             write(1, buf, n)
    "bf01000000"      # mov edi,1
    "0f05"            # syscall
    "b8e7000000"      # mov eax,231           exit_group(0)
    "31ff"            # xor edi,edi
    "0f05"            # syscall
) + b"/proc/self/exe\0"


def plant_self_exe_attack(rootfs: Path) -> str:
    """An image whose /attack is a `#!/proc/self/exe` script and whose ELF interpreter (at
    the host python's interpreter path) prints what /proc/self/exe names; returns the
    host python's path, which must never be printed."""
    need(os.uname().machine == "x86_64", "the payload is x86_64 code")
    from ociimg.runtime.process import _static_elf
    host_python = os.path.realpath(sys.executable)
    ld_so = rootfs / _elf_interpreter(host_python).lstrip("/")
    ld_so.parent.mkdir(parents=True, exist_ok=True)
    ld_so.write_bytes(_static_elf(62, _SHOW_EXE))
    ld_so.chmod(0o755)
    (rootfs / "attack").write_text("#!/proc/self/exe\n")
    (rootfs / "attack").chmod(0o755)
    return host_python

def test_proc_self_exe_interpreter_does_not_reach_the_host_python(
        runtime_env: tuple[Path, Path]) -> None:
    """CVE-2019-5736 by the entrypoint itself: a script whose interpreter line is
    /proc/self/exe, exec'd by the runtime, makes the kernel load the binary that exec'd
    it, with the image's ELF interpreter (here a program that prints what /proc/self/exe
    names): it must never be the host's python, which the program could then keep and
    write."""
    bundle, state_root = runtime_env
    host_python = plant_self_exe_attack(bundle / "rootfs")
    write_config(bundle, base_config(["/attack"]))
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert host_python not in proc.stdout, proc
    assert proc.returncode == 126 and "exec /attack: cannot execute" in proc.stderr, proc
    start_sleeper(bundle, state_root, "c2")
    proc = runtime(state_root, "exec", "c2", "/attack")
    assert host_python not in proc.stdout, proc
    assert proc.returncode == 126, proc


def test_proc_self_exe_without_the_trampoline_does_not_reach_the_host_python(
        runtime_env: tuple[Path, Path]) -> None:
    """Where the trampoline cannot be used (a seccomp profile that may refuse execveat,
    or an architecture without one), the program is exec'd straight from the runtime's
    process: that process must then run from a sealed copy of the interpreter."""
    bundle, state_root = runtime_env
    host_python = plant_self_exe_attack(bundle / "rootfs")
    config = base_config(["/attack"])
    config["linux"]["seccomp"]["syscalls"].append({"names": ["execveat"],
                                                   "action": "SCMP_ACT_ERRNO"})
    write_config(bundle, config)
    proc = runtime(state_root, "run", "-b", str(bundle), "c1")
    assert "/memfd:ociimg-python" in proc.stdout and host_python not in proc.stdout, proc
    config["process"]["args"] = ["sleep", "1000"]
    write_config(bundle, config)
    runtime(state_root, "run", "-d", "-b", str(bundle), "c2", check=True)
    proc = runtime(state_root, "exec", "c2", "/attack")
    assert "/memfd:ociimg-python" in proc.stdout and host_python not in proc.stdout, proc


def test_proc_self_exe_start_hook_does_not_reach_the_host_python(
        runtime_env: tuple[Path, Path]) -> None:
    """The same script as a startContainer hook: its path is resolved in the container
    (the image's file) and the init execs it, so it must go through the trampoline too."""
    bundle, state_root = runtime_env
    host_python = plant_self_exe_attack(bundle / "rootfs")
    for nnp in (True, False):  # seccomp loaded after the hook, or before it
        config = base_config(["echo", "program-ran"])
        config["process"]["noNewPrivileges"] = nnp
        config["hooks"] = {"startContainer": [{"path": "/attack"}]}
        write_config(bundle, config)
        proc = runtime(state_root, "run", "-b", str(bundle), "c1")
        assert host_python not in proc.stdout, proc
        assert proc.returncode != 0 and "program-ran" not in proc.stdout, proc
        assert "startContainer hook #0 /attack failed" in proc.stderr, proc
        runtime(state_root, "delete", "-f", "c1")


# A prestart hook that plays a process sharing the init's pid ns with CAP_SYS_PTRACE: it
# takes the init's sync socket (pidfd_getfd) once the runtime's intermediate process has
# reported the init, and names a host process as the container's pid.
FORGING_HOOK = r"""
import json, os, socket, sys, time
sys.path.insert(0, sys.argv[1])
from tests.integration.intruder import pidfd_getfd, proc_status
victim = int(sys.argv[2])
runtime = os.getppid()
with open(f"/proc/{runtime}/task/{runtime}/children") as f:
    (intermediate,) = [int(p) for p in f.read().split() if int(p) != os.getpid()]
with open(f"/proc/{runtime}/cmdline", "rb") as f:
    argv = f.read()
init = 0
for p in filter(str.isdigit, os.listdir("/proc")):
    try:
        with open(f"/proc/{p}/cmdline", "rb") as f:
            same = f.read() == argv
    except OSError:
        continue
    if same and len(proc_status(int(p)).get("NSpid", "").split()) == 2:
        init = int(p)
while proc_status(intermediate).get("State", "Z")[0] not in "TZ":
    time.sleep(0.005)
for fd in os.listdir(f"/proc/{init}/fd"):
    if os.readlink(f"/proc/{init}/fd/{fd}").startswith("socket:"):
        with socket.socket(fileno=pidfd_getfd(init, int(fd))) as s:
            s.send(json.dumps({"type": "pid", "pid": victim, "placed": True}).encode())
print("forged", init, file=sys.stderr)
"""


def test_forged_pid_on_the_init_socket_is_ignored(runtime_env: tuple[Path, Path],
                                                  tmp_path: Path) -> None:
    """create: a "pid" message forged on the init's socket must not become the
    container's pid (state, kill and delete would then hit a host process)."""
    bundle, state_root = runtime_env
    hook = tmp_path / "forge.py"
    hook.write_text(FORGING_HOOK)
    host_victim = subprocess.Popen(["sleep", "1000"])
    try:
        config = base_config(["sleep", "1000"])
        config["hooks"] = {"prestart": [{"path": sys.executable, "args": [
            sys.executable, str(hook), REPO, str(host_victim.pid)]}]}
        write_config(bundle, config)
        runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
        doc = json.loads(runtime(state_root, "state", "c1", check=True).stdout)
        pid = doc["pid"]
        assert doc["status"] == "created" and pid != host_victim.pid
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            assert b"ociimg.runtime" in f.read()  # the init, blocked before its execve
        runtime(state_root, "delete", "-f", "c1", check=True)
        assert host_victim.poll() is None
    finally:
        host_victim.kill()
        host_victim.wait()


# A prestart hook (the init is waiting for it, before its pivot_root): records the owner
# of the init's /proc/<pid>/environ, its own uid while it is dumpable and root
# otherwise (proc(5) /proc/pid: "owned by root when ... not dumpable").
DUMPABLE_HOOK = r"""
import json, os, sys
pid = json.load(sys.stdin)["pid"]
with open(sys.argv[1], "w") as f:
    f.write(str(os.stat(f"/proc/{pid}/environ").st_uid))
"""


def test_init_in_a_user_namespace_stays_non_dumpable(root: None, tmp_path: Path) -> None:
    """Becoming root of a new user ns is a uid change, which sets "dumpable" back to
    fs.suid_dumpable: with suid_dumpable=1 the init (host python, full capabilities in
    the ns) was dumpable until its setuid, open to a process of the same user ns (a pod
    sharing its pid ns) through /proc/<pid>/{exe,mem}."""
    sysctl = Path("/proc/sys/fs/suid_dumpable")
    before = sysctl.read_text()
    base = Path(tempfile.mkdtemp(prefix="ociimg-userns-"))
    state_root = base / "state"
    try:
        os.chmod(base, 0o711)
        bundle = make_bundle(base, ["true"])
        os.chown(bundle / "rootfs", 100000, 100000)
        hook = base / "hook.py"
        hook.write_text(DUMPABLE_HOOK)
        owner = base / "owner"
        config = base_config(["true"])
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["hooks"] = {"prestart": [{"path": sys.executable,
                                         "args": [sys.executable, str(hook), str(owner)]}]}
        write_config(bundle, config)
        sysctl.write_text("1")
        proc = runtime(state_root, "create", "-b", str(bundle), "c1")
        sysctl.write_text(before)
        assert proc.returncode == 0, proc.stderr
        assert owner.read_text() == "0"
    finally:
        sysctl.write_text(before)
        runtime(state_root, "delete", "-f", "c1")
        shutil.rmtree(base)


def _with_ptrace(config: dict) -> dict:
    caps = config["process"]["capabilities"]
    for kind in ("bounding", "effective", "permitted"):
        caps[kind] = [*caps[kind], "CAP_SYS_PTRACE"]
    return config


def _sealed(pid: int) -> bool:
    """Whether /proc/<pid>/exe is a memfd that can never be written."""
    fd = os.open(f"/proc/{pid}/exe", os.O_RDONLY | os.O_CLOEXEC)
    try:
        import fcntl
        return bool(fcntl.fcntl(fd, 1034) & 0x8)  # F_GET_SEALS & F_SEAL_WRITE
    except OSError:
        return False
    finally:
        os.close(fd)


def test_ptrace_capable_container_cannot_reach_a_created_init(
        runtime_env: tuple[Path, Path]) -> None:
    """CAP_SYS_PTRACE (no user ns) opens /proc/<pid>/exe of a non-dumpable process: a
    process exec'd into a created container reads the init's, which must then be a sealed
    copy of the interpreter, never the host's python (kept, then written once idle)."""
    bundle, state_root = runtime_env
    write_config(bundle, _with_ptrace(base_config(["true"])))
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    pid = init_pid(state_root)
    proc = runtime(state_root, "exec", "c1", "sh", "-c",
                   "readlink /proc/1/exe; exec 3</proc/1/exe && echo OPENED", check=True)
    host_python = os.path.realpath(sys.executable)
    assert "OPENED" in proc.stdout  # the capability does open it
    assert host_python not in proc.stdout, proc.stdout
    assert _sealed(pid)
    runtime(state_root, "start", "c1", check=True)


EXE_WATCHER = r"""
echo ready > /tmp/watcher-ready
n=0
while [ $n -lt 100000 ]; do
  n=$((n+1))
  for d in /proc/[0-9]*; do
    e=$(readlink $d/exe 2>/dev/null)
    case "$e" in ""|/bin/busybox) ;; *) echo "exe $e"; exit 0;; esac
  done
done
echo NOT-CAUGHT
"""


def test_ptrace_capable_container_cannot_reach_a_joining_exec(
        runtime_env: tuple[Path, Path]) -> None:
    """The same for a process joining by `exec` (visible from its fork into the pid ns
    to its execve): a watcher inside reads the exe of the first process it sees that is
    not busybox."""
    bundle, state_root = runtime_env
    write_config(bundle, _with_ptrace(base_config(["sleep", "1000"])))
    runtime(state_root, "run", "-d", "-b", str(bundle), "c1", check=True)
    watcher = exec_until_ready(bundle, state_root, EXE_WATCHER, "watcher-ready")
    try:
        victim = runtime(state_root, "exec", "-e", SLOW_PATH, "c1", "true")
        out, err = watcher.communicate(timeout=60)
    finally:
        if watcher.poll() is None:
            watcher.kill()
            watcher.wait()
    assert victim.returncode == 0, victim
    assert out.startswith("exe "), (out, err)  # it saw the joining process
    assert os.path.realpath(sys.executable) not in out, out


def test_ptrace_capable_exec_into_an_unsealed_created_init_is_refused(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    """A container created without the capability has an init that still runs the host's
    python until start: an exec given CAP_SYS_PTRACE (process.json) must not join it."""
    bundle, state_root = runtime_env
    config = base_config(["true"])
    write_config(bundle, config)
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    process_json = tmp_path / "process.json"
    process_json.write_text(json.dumps(_with_ptrace(json.loads(json.dumps(config)))["process"]
                                       | {"args": ["readlink", "/proc/1/exe"]}))
    proc = runtime(state_root, "exec", "-p", str(process_json), "c1")
    assert os.path.realpath(sys.executable) not in proc.stdout, proc
    assert proc.returncode != 0 and "before it is started" in proc.stderr, proc
    runtime(state_root, "start", "c1", check=True)


# A prestart hook that plays a process sharing the init's pid ns with CAP_SYS_PTRACE: it
# takes a copy of the init's sync socket, kills the init and leaves a process behind
# that holds the copy (so the runtime never reads EOF), then asks for the hooks again.
HOLDING_HOOK = r"""
import json, os, signal, socket, sys
sys.path.insert(0, sys.argv[1])
from tests.integration.intruder import pidfd_getfd
init = json.load(sys.stdin)["pid"]
stolen = [pidfd_getfd(init, int(fd)) for fd in os.listdir(f"/proc/{init}/fd")
          if os.readlink(f"/proc/{init}/fd/{fd}").startswith("socket:")]
with open(sys.argv[2], "a") as f:
    f.write("ran\n")
if os.fork() == 0:
    os.setsid()
    with open(sys.argv[3], "w") as f:
        f.write(str(os.getpid()))
    os.kill(init, 9)
    for fd in stolen:
        socket.socket(fileno=os.dup(fd)).send(json.dumps({"type": "hooks"}).encode())
    signal.pause()
"""


def test_stolen_init_socket_neither_hangs_create_nor_reruns_hooks(
        runtime_env: tuple[Path, Path], tmp_path: Path) -> None:
    """A copy of the init's socket taken from inside: create must notice the init died
    (not wait for an EOF the copy holds off forever), and a forged "hooks" must not run
    the host's prestart hooks again."""
    bundle, state_root = runtime_env
    hook = tmp_path / "hold.py"
    hook.write_text(HOLDING_HOOK)
    runs, holder = tmp_path / "runs", tmp_path / "holder"
    config = base_config(["true"])
    config["hooks"] = {"prestart": [{"path": sys.executable, "args": [
        sys.executable, str(hook), REPO, str(runs), str(holder)]}]}
    write_config(bundle, config)
    try:
        proc = runtime(state_root, "create", "-b", str(bundle), "c1", timeout=30)
        assert proc.returncode != 0 and "exited during setup" in proc.stderr, proc
        assert runs.read_text() == "ran\n"
    finally:
        if holder.exists():
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(holder.read_text()), 9)


def test_planted_proc_self_fd_does_not_skip_start(runtime_env: tuple[Path, Path]) -> None:
    """Without a proc mount, /proc/self/fd/N after pivot_root is the image's: files
    planted there took the exec.fifo's reopening, and the program ran at create, before
    `start` (runc refuses: "/proc/self/fd is not on procfs")."""
    bundle, state_root = runtime_env
    rootfs = bundle / "rootfs"
    planted = rootfs / "proc" / "self" / "fd"
    planted.mkdir(parents=True)
    for n in range(3, 64):
        (planted / str(n)).write_text("")
    config = base_config(["sh", "-c", "echo ran > /tmp/ran"])
    config["mounts"] = [m for m in config["mounts"] if m["destination"] != "/proc"]
    config["linux"]["maskedPaths"] = config["linux"]["readonlyPaths"] = []
    write_config(bundle, config)
    proc = runtime(state_root, "create", "-b", str(bundle), "c1")
    assert proc.returncode != 0 and "/proc/self/fd is not on procfs" in proc.stderr, proc
    runtime(state_root, "delete", "-f", "c1")
    assert not (rootfs / "tmp" / "ran").exists()
    assert all(not (planted / f).read_text() for f in os.listdir(planted))


def _fifo_writer(pid: int) -> int:
    """The fd the init holds exec.fifo open for writing with (0 while it has none)."""
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            with open(f"/proc/{pid}/fdinfo/{fd}") as f:
                flags = int(f.read().split("flags:")[1].split()[0], 8)
        except (OSError, IndexError):
            continue
        # "(deleted)" once `start` has read the byte and unlinked it
        if "/exec.fifo" in target and flags & 3 == os.O_WRONLY:
            return int(fd)
    return 0


def test_stolen_fifo_neither_hangs_start_nor_forges_its_failure(
        runtime_env: tuple[Path, Path]) -> None:
    """A copy of the init's exec.fifo writer, taken from inside while a startContainer
    hook runs, held open and filled with text: `start` must still return once the program
    runs, and report no failure (the text had escape sequences for the operator's
    terminal)."""
    bundle, state_root = runtime_env
    config = base_config(["sleep", "1000"])
    # The hook (the image's sh) waits for the test: the window is held open, not raced.
    config["hooks"] = {"startContainer": [{"path": "/bin/sh", "args": [
        "sh", "-c", "while [ ! -e /tmp/go ]; do sleep 0.01; done"]}]}
    write_config(bundle, config)
    runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
    pid = init_pid(state_root)
    start = subprocess.Popen([*RUNTIME, "--root", str(state_root), "start", "c1"], cwd=REPO,
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    stolen = -1
    try:
        deadline = time.monotonic() + 30
        while not (writer := _fifo_writer(pid)):
            assert time.monotonic() < deadline and start.poll() is None, "no fifo writer"
            time.sleep(0.01)
        stolen = pidfd_getfd(pid, writer)
        os.write(stolen, b"\x1b]0;pwned\x07forged failure " + b"x" * 60000)
        (bundle / "rootfs" / "tmp" / "go").touch()
        assert start.wait(timeout=30) == 0
        assert "forged" not in start.stderr.read()
        assert json.loads(runtime(state_root, "state", "c1", check=True).stdout)[
            "status"] == "running"
    finally:
        if stolen >= 0:
            os.close(stolen)
        if start.poll() is None:
            start.kill()
            start.wait()


def test_exec_during_create_is_refused(runtime_env: tuple[Path, Path],
                                       tmp_path: Path) -> None:
    """While create runs (a prestart hook holds it), the init has not pivoted yet: an
    exec then joined a mount ns whose root was the host's (runc: "container does not
    exist"). The state says "creating" and exec is refused."""
    bundle, state_root = runtime_env
    go, waiting = tmp_path / "go", tmp_path / "waiting"
    config = base_config(["true"])
    config["hooks"] = {"prestart": [{"path": "/bin/sh", "args": [
        "sh", "-c", f"touch {waiting}; while [ ! -e {go} ]; do sleep 0.01; done"]}]}
    write_config(bundle, config)
    create = subprocess.Popen([*RUNTIME, "--root", str(state_root), "create", "-b",
                               str(bundle), "c1"], stdin=subprocess.DEVNULL,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    try:
        deadline = time.monotonic() + 30
        while not waiting.exists():
            assert time.monotonic() < deadline and create.poll() is None
            time.sleep(0.01)
        doc = json.loads(runtime(state_root, "state", "c1", check=True).stdout)
        assert doc["status"] == "creating"
        proc = runtime(state_root, "exec", "c1", "sh", "-c", "ls /work /root/.pyenv")
        assert proc.returncode != 0 and "creating" in proc.stderr, proc
        assert runtime(state_root, "start", "c1").returncode != 0
        go.touch()
        assert create.wait(timeout=30) == 0
        doc = json.loads(runtime(state_root, "state", "c1", check=True).stdout)
        assert doc["status"] == "created"
    finally:
        go.touch()
        if create.poll() is None:
            create.kill()
            create.wait()


def test_exec_tty_returns_when_its_process_exits(runtime_env: tuple[Path, Path]) -> None:
    """`exec -t`: a process of the container that keeps the pty's slave open (here one
    the command left behind, deaf to SIGHUP) held the runtime's terminal proxy, and the
    operator's exec, for ever; runc returns when the process exits."""
    import pty
    bundle, state_root = runtime_env
    start_sleeper(bundle, state_root)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "exec", "-t", "c1", "sh",
                             "-c", "(trap '' HUP; touch /tmp/deaf; exec sleep 1000) & "
                             "while [ ! -e /tmp/deaf ]; do :; done; echo left; exit 4"],
                            stdin=slave, stdout=slave, stderr=subprocess.PIPE, cwd=REPO)
    os.close(slave)
    try:
        assert proc.wait(timeout=30) == 4
        out = b""
        os.set_blocking(master, False)
        with contextlib.suppress(OSError):
            while chunk := os.read(master, 4096):
                out += chunk
        assert b"left" in out
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_tty_without_a_pid_ns_returns_when_its_init_exits(
        runtime_env: tuple[Path, Path]) -> None:
    """The same for `run -t` of a container without a pid ns of its own: the init's exit
    does not kill what it left behind."""
    import pty
    bundle, state_root = runtime_env
    config = base_config(["sh", "-c", "(trap '' HUP; touch /tmp/deaf; exec sleep 1000) & "
                                      "while [ ! -e /tmp/deaf ]; do :; done; exit 4"])
    config["process"]["terminal"] = True
    config["linux"]["namespaces"] = [ns for ns in config["linux"]["namespaces"]
                                     if ns["type"] != "pid"]
    write_config(bundle, config)
    master, slave = pty.openpty()
    proc = subprocess.Popen([*RUNTIME, "--root", str(state_root), "run", "-b", str(bundle),
                             "c1"], stdin=slave, stdout=slave, stderr=subprocess.PIPE,
                            cwd=REPO)
    os.close(slave)
    try:
        assert proc.wait(timeout=30) == 4
    finally:
        os.close(master)
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_forged_error_reaches_the_terminal_without_escapes(
        runtime_env: tuple[Path, Path]) -> None:
    """An "error" forged on the exec socket is text from inside: the runtime prints it on
    the operator's terminal, so without control characters (escape sequences) and short."""
    bundle, state_root = runtime_env
    start_sleeper(bundle, state_root)
    marker = "forged-error-marker"
    proc = _slow_exec(state_root, marker, [], ["true"])
    try:
        joining = _stop_joining(proc, marker)
        for fd in _socket_fds(joining):
            with socket.socket(fileno=pidfd_getfd(joining, fd)) as stolen:
                stolen.send(json.dumps({"type": "error", "message": "\x1b]0;pwned\x07\x1b[2J"
                                        + "y" * 50000, "hint": "\x1b[31mred"}).encode())
        os.kill(joining, 9)  # and the process dies: the error is taken as its own
        proc.wait(timeout=60)
        err = proc.stderr.read()
        assert proc.returncode != 0 and "pwned" in err
        assert "\x1b" not in err and "\x07" not in err and len(err) < 5000, repr(err[:200])
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_forged_error_does_not_fail_an_exec_that_ran(runtime_env: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    """A forged "error" while the process goes on to exec its program: `exec -d` must
    still succeed and write its pid (the program runs; a caller would lose track of it)."""
    bundle, state_root = runtime_env
    start_sleeper(bundle, state_root)
    marker = "forged-error-ran-marker"
    pid_file = tmp_path / "exec.pid"
    proc = _slow_exec(state_root, marker, ["-d", "--pid-file", str(pid_file)], ["sleep", "78"])
    try:
        joining = _stop_joining(proc, marker)
        for fd in _socket_fds(joining):
            with socket.socket(fileno=pidfd_getfd(joining, fd)) as stolen:
                stolen.send(json.dumps({"type": "error", "message": "forged"}).encode())
        os.kill(joining, 18)
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
        with open(f"/proc/{int(pid_file.read_text())}/cmdline", "rb") as f:
            assert f.read().split(b"\0")[:2] == [b"sleep", b"78"]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_exec_into_a_created_user_ns_container_with_ptrace(root: None) -> None:
    """CAP_SYS_PTRACE held inside a user ns of the container's own reaches nothing of
    the host: an exec into it while created is not refused (nor run sealed)."""
    base = Path(tempfile.mkdtemp(prefix="ociimg-userns-"))
    state_root = base / "state"
    try:
        os.chmod(base, 0o711)
        bundle = make_bundle(base, ["true"])
        os.chown(bundle / "rootfs", 100000, 100000)
        config = _with_ptrace(base_config(["true"]))
        config["linux"]["namespaces"].append({"type": "user"})
        config["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        config["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        write_config(bundle, config)
        runtime(state_root, "create", "-b", str(bundle), "c1", check=True)
        proc = runtime(state_root, "exec", "c1", "true")
        assert proc.returncode == 0, proc.stderr
    finally:
        runtime(state_root, "delete", "-f", "c1")
        shutil.rmtree(base)

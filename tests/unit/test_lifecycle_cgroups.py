"""stats' reading of a cgroup, on fake v2 and v1 trees (the hybrid layout is v1 for the
numbers): usage without reclaimable page cache, "max"/huge limits as the host's memory."""

from __future__ import annotations

from pathlib import Path

from ociimg.containers.cgroupstats import _procs, _usage_v1, _usage_v2, host_memory


def _files(d: Path, files: dict[str, str]) -> None:
    d.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (d / name).write_text(text)


def test_v2(tmp_path: Path) -> None:
    _files(tmp_path, {"cpu.stat": "usage_usec 1500\nuser_usec 1000\n",
                      "memory.current": "10000\n", "memory.stat": "anon 1\ninactive_file 4000\n",
                      "memory.max": "max\n", "pids.current": "3\n", "cgroup.procs": "7\n9\n"})
    _files(tmp_path / "child", {"cgroup.procs": "11\n"})
    u = _usage_v2(str(tmp_path))
    assert (u.cpu_ns, u.memory, u.memory_limit, u.pids) == (1_500_000, 6000, host_memory(), 3)
    assert _procs(str(tmp_path)) == [7, 9, 11]
    (tmp_path / "memory.max").write_text("65536\n")
    assert _usage_v2(str(tmp_path)).memory_limit == 65536


def test_v1(tmp_path: Path) -> None:
    _files(tmp_path / "cpuacct", {"cpuacct.usage": "123456789\n"})
    _files(tmp_path / "memory", {"memory.usage_in_bytes": "8192\n",
                                 "memory.stat": "cache 1\ntotal_inactive_file 4096\n",
                                 "memory.limit_in_bytes": "9223372036854771712\n"})
    _files(tmp_path / "pids", {"pids.current": "2\n"})
    dirs = {k: str(tmp_path / k) for k in ("cpuacct", "memory", "pids")}
    u = _usage_v1(dirs)
    assert (u.cpu_ns, u.memory, u.memory_limit, u.pids) == (123456789, 4096, host_memory(), 2)
    (tmp_path / "memory" / "memory.limit_in_bytes").write_text("1048576\n")
    assert _usage_v1(dirs).memory_limit == 1048576

"""docker run's option syntax: -v, --mount, --tmpfs, -e/--env-file, --ulimit, --sysctl,
--device, --volumes-from, --stop-signal, --cidfile; and what each becomes in config.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ociimg.bundle import BindMount, BundleOptions, to_runtime_config
from ociimg.bundle.runflags import (
    TmpfsMount,
    Ulimit,
    check_sysctls,
    host_device,
    merge_tmpfs_options,
    parse_tmpfs,
    parse_ulimit,
    rlimits,
    tmpfs_json,
)
from ociimg.cli import runopts
from ociimg.containers.volumes import VolumeMount, check_volume_name
from ociimg.errors import InvalidArgument, InvalidDocument, OciimgError
from ociimg.spec import parse_config


def test_tmpfs_options_are_parsed_not_a_directory_name() -> None:
    t = parse_tmpfs("/x:size=10m,mode=1777")
    assert t == TmpfsMount("/x", ("size=10m", "mode=1777"))
    m = tmpfs_json(t)
    assert m["destination"] == "/x" and m["type"] == "tmpfs"
    assert sorted(m["options"]) == sorted(["nosuid", "nodev", "noexec", "mode=1777",
                                           "size=10m"])
    # the later flag of a pair wins (moby MergeTmpfsOptions), defaults first
    assert "exec" in merge_tmpfs_options(["exec", "ro"], "t")
    assert "noexec" not in merge_tmpfs_options(["exec"], "t")
    assert merge_tmpfs_options(["mode=700", "mode=0755"], "t")[-1] == "mode=0755"


@pytest.mark.parametrize("bad", ["size=10x", "mode=999", "mode=17777", "foo=1",
                                 "size=1m,upperdir=/etc", "uid=-1", "bogus", "size="])
def test_tmpfs_option_values_are_checked(bad: str) -> None:
    # the text goes to mount(2) as data: nothing unknown or malformed passes
    with pytest.raises(InvalidDocument):
        tmpfs_json(parse_tmpfs(f"/x:{bad}"))


def test_relative_tmpfs_destination_is_refused() -> None:
    with pytest.raises(InvalidDocument):
        tmpfs_json(parse_tmpfs("x:size=1m"))


def test_volume_flag_forms(tmp_path: Path) -> None:
    assert runopts.parse_volume_flag("/data") == VolumeMount("/data")
    assert runopts.parse_volume_flag("cache:/data:ro,z") == VolumeMount("/data", "cache", True)
    assert runopts.parse_volume_flag("cache:/data:nocopy") == \
        VolumeMount("/data", "cache", nocopy=True)
    assert runopts.parse_volume_flag(f"{tmp_path}:/h:Z") == BindMount(str(tmp_path), "/h")
    assert runopts.parse_volume_flag(f"{tmp_path}:/h:ro,rshared") == \
        BindMount(str(tmp_path), "/h", True, "rshared")
    # -v makes a missing host dir (docker); --mount does not
    assert runopts.parse_volume_flag(f"{tmp_path}/new/dir:/n").source == f"{tmp_path}/new/dir"
    assert (tmp_path / "new" / "dir").is_dir()
    with pytest.raises(InvalidArgument, match="does not exist"):
        runopts.parse_mount(f"type=bind,src={tmp_path}/other,dst=/o")
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidArgument):  # a dangling link is not made through
        runopts.parse_volume_flag(f"{tmp_path}/dangling:/d")
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("bad", ["a/b:/d", "x:/d", ".hidden:/d",
                                 "name:relative", "name:/d:bogus", "name:/d:ro:extra", ":/d",
                                 "n" * 200 + ":/d", "na\0me:/d"])
def test_volume_flag_rejects_bad_names_and_options(bad: str) -> None:
    # bad names or options: no name ever becomes a path outside ROOT/volumes
    with pytest.raises(OciimgError):
        runopts.parse_volume_flag(bad)


@pytest.mark.parametrize("name", ["..", ".", "a/../b", "/abs", "a\nb", "-x", "a", ""])
def test_volume_names_cannot_traverse(name: str) -> None:
    with pytest.raises(InvalidArgument):
        check_volume_name(name)


def test_mount_flag(tmp_path: Path) -> None:
    assert runopts.parse_mount("type=volume,source=v1,target=/d,readonly") == \
        VolumeMount("/d", "v1", True)
    assert runopts.parse_mount("target=/d,volume-nocopy") == VolumeMount("/d", None, nocopy=True)
    assert runopts.parse_mount(f"type=bind,src={tmp_path},dst=/h,bind-propagation=rslave") == \
        BindMount(str(tmp_path), "/h", False, "rslave")
    assert runopts.parse_mount("type=tmpfs,target=/t,tmpfs-size=1m,tmpfs-mode=1770") == \
        TmpfsMount("/t", ("size=1048576", "mode=1770"))
    for bad in ("type=bind,target=/h", "type=nfs,target=/x", "type=volume,source=v",
                "type=volume,target=/d,bogus=1", "type=tmpfs,source=x,target=/t",
                "type=volume,target=/d,readonly=maybe", "target=/d,target=/e",
                "type=bind,source=/nonexistent-h-vol,target=/x"):
        with pytest.raises(OciimgError):
            runopts.parse_mount(bad)


def test_duplicate_mount_points_are_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="duplicate"):
        runopts.mount_flags(["a1:/d"], ["type=tmpfs,target=/d/"], [])


def test_env_host_values_and_env_file(tmp_path: Path) -> None:
    environ = {"HOSTVAR": "from host", "OTHER": "o"}
    envf = tmp_path / "env"
    envf.write_text("# comment\n\n  SPACED=a b \nQUOTED=\"q\"\nOTHER\nABSENT\nEQ=x=y\n")
    out = runopts.environment(["HOSTVAR", "NOPE", "K=v", "E="], [envf], environ)
    assert out == ['SPACED=a b ', 'QUOTED="q"', "OTHER=o", "EQ=x=y",
                   "HOSTVAR=from host", "K=v", "E="]
    envf.write_text("BAD NAME=1\n")
    with pytest.raises(InvalidArgument, match=":1"):
        runopts.environment([], [envf], environ)
    envf.write_bytes(b"A=\xff\n")
    with pytest.raises(InvalidArgument, match="UTF-8"):
        runopts.environment([], [envf], environ)
    with pytest.raises(InvalidArgument):
        runopts.environment([], [tmp_path / "missing"], environ)
    with pytest.raises(InvalidArgument):
        runopts.environment(["=x"], [], environ)


def test_ulimits() -> None:
    assert parse_ulimit("nofile=100:200") == Ulimit("RLIMIT_NOFILE", 100, 200)
    assert parse_ulimit("core=-1") == Ulimit("RLIMIT_CORE", (1 << 64) - 1, (1 << 64) - 1)
    for bad in ("nofile=200:100", "nofiles=1", "nofile", "nofile=a", "nofile=1:2:3",
                "nofile=99999999999999999999999"):
        with pytest.raises(InvalidDocument):
            parse_ulimit(bad)
    defaults = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    assert rlimits(defaults, [parse_ulimit("nofile=10"), parse_ulimit("nproc=5:6")]) == [
        {"type": "RLIMIT_NOFILE", "hard": 10, "soft": 10},
        {"type": "RLIMIT_NPROC", "hard": 6, "soft": 5}]


def test_sysctls_only_of_own_namespaces() -> None:
    own = {"ipc", "network", "uts", "pid", "mount"}
    check_sysctls({"net.ipv4.ip_forward": "1", "kernel.shmmax": "1", "fs.mqueue.msg_max": "5",
                   "kernel.domainname": "x"}, own)
    for key in ("kernel.panic", "vm.overcommit_memory", "kernel.hostname", "../../x",
                "net", "net.ipv4.ip_forward/../x"):
        with pytest.raises(InvalidDocument):
            check_sysctls({key: "1"}, own)
    with pytest.raises(InvalidDocument, match="host's network"):
        check_sysctls({"net.ipv4.ip_forward": "1"}, own - {"network"})
    with pytest.raises(InvalidDocument):
        check_sysctls({"net.core.somaxconn": "1\nkernel.panic=1"}, own)


def test_devices() -> None:
    d = host_device("/dev/null", "/dev/mynull", "rw")
    assert (d.kind, d.major, d.minor, d.path) == ("c", 1, 3, "/dev/mynull")
    assert d.rule() == {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}
    assert runopts.parse_device("/dev/null:r").permissions == "r"
    for args in (("/dev/null", "/etc/x"), ("/dev/null", "/dev/../etc/x"), ("/etc/passwd",),
                 ("/dev/nonexistent-h-vol",), ("/dev/null", None, "rwx"),
                 ("/dev/null", None, "")):
        with pytest.raises(InvalidDocument):
            host_device(*args)


def test_small_flags(tmp_path: Path) -> None:
    assert runopts.parse_volumes_from("web") == ("web", None)
    assert runopts.parse_volumes_from("web:ro") == ("web", True)
    with pytest.raises(InvalidArgument):
        runopts.parse_volumes_from("web:rx")
    assert runopts.check_stop_signal("int") == "SIGINT"
    assert runopts.check_stop_signal("9") == "SIGKILL"
    with pytest.raises(InvalidArgument):
        runopts.check_stop_signal("SIGNOPE")
    runopts.check_userns("host")
    with pytest.raises(InvalidArgument):
        runopts.check_userns("keep-id")
    cid = tmp_path / "cid"
    runopts.check_cidfile(cid)
    runopts.write_cidfile(cid, "abc")
    assert cid.read_text() == "abc"
    with pytest.raises(InvalidArgument, match="ID file found"):
        runopts.check_cidfile(cid)
    (tmp_path / "dangling").symlink_to(tmp_path / "nowhere")
    with pytest.raises(InvalidArgument):  # not written through a symlink
        runopts.check_cidfile(tmp_path / "dangling")


def test_own_errors_exit_125_but_126_127_stay() -> None:
    from ociimg.errors import ExecutableNotFound, NotExecutable
    for exc, code in ((InvalidArgument("x"), 125), (ExecutableNotFound("x"), 127),
                      (NotExecutable("x"), 126), (OSError(2, "gone"), 125)):
        with pytest.raises(OciimgError) as info, runopts.docker_exit_codes():
            raise exc
        assert info.value.exit_code == code


def _config(tmp_path: Path, **options: object) -> dict:
    rootfs = tmp_path / "rootfs"
    (rootfs / "etc").mkdir(parents=True, exist_ok=True)
    (rootfs / "etc" / "group").write_text("root:x:0:\nwheel:x:10:\n")
    image = parse_config(json.dumps({"architecture": "amd64", "os": "linux",
                                     "config": {"Cmd": ["sh"]},
                                     "rootfs": {"type": "layers", "diff_ids": []}}).encode())
    return to_runtime_config(image, BundleOptions(**options), rootfs)


def test_bundle_translation(tmp_path: Path) -> None:
    base = _config(tmp_path)
    cfg = _config(tmp_path, tmpfs=["/x:size=1m", TmpfsMount("/y", ("exec",))],
                  shm_size=1 << 20, ulimits=[parse_ulimit("nofile=64")],
                  sysctls={"net.core.somaxconn": "100"}, group_add=["wheel", "4242"],
                  devices=[host_device("/dev/null", "/dev/n2", "r")])
    mounts = {m["destination"]: m for m in cfg["mounts"]}
    assert "size=1m" in mounts["/x"]["options"] and "exec" in mounts["/y"]["options"]
    assert "size=1024k" in mounts["/dev/shm"]["options"]
    assert cfg["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 64, "soft": 64}]
    assert cfg["linux"]["sysctl"] == {"net.core.somaxconn": "100"}
    assert cfg["process"]["user"]["additionalGids"] == [10, 4242]
    assert cfg["linux"]["devices"][0]["path"] == "/dev/n2"
    assert cfg["linux"]["resources"]["devices"][-1]["access"] == "r"
    assert base["linux"]["maskedPaths"] and "seccomp" in base["linux"]


def test_privileged_lifts_masks_seccomp_and_device_rules(tmp_path: Path) -> None:
    cfg = _config(tmp_path, privileged=True)
    linux = cfg["linux"]
    assert linux["maskedPaths"] == [] and linux["readonlyPaths"] == []
    assert "seccomp" not in linux
    assert linux["resources"]["devices"] == [{"allow": True, "access": "rwm"}]
    assert any(d["path"] == "/dev/null" for d in linux["devices"])
    assert "CAP_SYS_ADMIN" in cfg["process"]["capabilities"]["effective"]
    sysfs = next(m for m in cfg["mounts"] if m["type"] == "sysfs")
    assert "ro" not in sysfs["options"]

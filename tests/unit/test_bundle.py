"""Image config → runtime-spec config.json (ociimg.bundle) and the default profiles.

Golden files live in tests/golden/; ``pytest --update-golden`` rewrites them (review the diff).
Every produced config is validated against the runtime-spec JSON schema.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from ociimg import bundle, users
from ociimg.bundle import BindMount, BundleOptions, profiles, to_runtime_config, write_bundle
from ociimg.errors import InvalidDocument
from ociimg.oskit import paths
from ociimg.spec import parse_config
from ociimg.users import resolve_user
from tests import ocischema
from tests.conftest import need

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SECCOMP_PLACEHOLDER = "<default profile: see seccomp-amd64.json>"

PASSWD = """\
root:x:0:0:root:/root:/bin/sh
daemon:x:1:1:daemon:/usr/sbin:/bin/false
# a comment line
broken:x:notanumber:0::/:/bin/sh
huge:x:4294967296:0::/:/bin/sh
app:x:1000:1000:App User:/home/app:/bin/sh
nohome:x:1001:1001::
"""

GROUP = """\
root:x:0:
wheel:x:10:root,app
app:x:1000:
audio:x:29:app,daemon
video:x:44:daemon
nohome:x:1001:
"""


def make_config(config: dict[str, Any] | None = None, **top: Any) -> Any:
    doc: dict[str, Any] = {
        "architecture": "amd64",
        "os": "linux",
        "config": config or {},
        "rootfs": {"type": "layers", "diff_ids": []},
    }
    doc.update(top)
    return parse_config(json.dumps(doc).encode())


@pytest.fixture(params=[True, False], ids=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> bool:
    """Run a test with both in-root resolvers: the kernel's openat2 and our own walk."""
    if request.param:
        need(paths.HAVE_OPENAT2, "openat2 (Linux >= 5.6) not available")
    monkeypatch.setattr(paths, "HAVE_OPENAT2", request.param)
    return bool(request.param)


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text(PASSWD)
    (root / "etc" / "group").write_text(GROUP)
    return root


# --- schema validation --------------------------------------------------------------------


def _validator() -> Any:
    return ocischema.validator("runtime-spec", "config-schema.json")


@pytest.fixture(scope="module")
def validator() -> Any:
    return _validator()


def assert_valid(validator: Any, config: dict[str, Any]) -> None:
    errors = sorted(validator.iter_errors(config), key=lambda e: list(e.path))
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:5])


def test_schema_validator_rejects_a_bad_config(validator: Any) -> None:
    # The validator must be able to fail, or the schema checks below prove nothing.
    bad = {"ociVersion": "1.2.0", "process": {"cwd": "/", "user": {"uid": -1, "gid": 0}},
           "root": {"path": "rootfs"}}
    assert list(validator.iter_errors(bad))
    bad_ref = {"ociVersion": "1.2.0", "root": {"path": "rootfs"},
               "linux": {"seccomp": {"defaultAction": "SCMP_ACT_BOGUS"}}}
    assert list(validator.iter_errors(bad_ref))  # proves $refs into defs-linux.json resolve


# --- golden files -------------------------------------------------------------------------

GOLDEN_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], BundleOptions]] = {
    "plain": (
        {"Env": ["PATH=/usr/bin:/bin"], "Cmd": ["sh"]},
        {},
        BundleOptions(),
    ),
    "entrypoint-cmd": (
        {"Entrypoint": ["/bin/busybox", "httpd"], "Cmd": ["-f", "-p", "8080"],
         "WorkingDir": "/srv", "Env": ["HOME=/data", "LANG=C.UTF-8"]},
        {"created": "2024-01-02T03:04:05Z", "author": "ociimg tests"},
        BundleOptions(hostname="web"),
    ),
    "user-named-groups": (
        {"User": "app", "Cmd": ["id"]},
        {},
        BundleOptions(),
    ),
    "labels-override": (
        {"Cmd": ["true"], "StopSignal": "SIGTERM",
         "ExposedPorts": {"8080/tcp": {}, "53/udp": {}}, "Volumes": {"/data": {}, "/cache": {}},
         "Labels": {"org.opencontainers.image.stopSignal": "SIGQUIT",
                    "org.opencontainers.image.os": "plan9",
                    "com.example.note": "$(rm -rf /) {{.Danger}}",
                    "run.oci.keep_original_groups": "1",
                    "org.systemd.property.ExecStartPre": "/bin/sh -c evil"}},
        {"variant": "v3", "os.version": "6.1", "os.features": ["a", "b"]},
        BundleOptions(annotations={"com.example.note": "caller wins"}),
    ),
    "terminal": (
        {"Cmd": ["sh"], "Env": ["PATH=/bin", "FOO=image"]},
        {},
        BundleOptions(terminal=True, env=["FOO=caller", "BAR=1"], user="1000:44"),
    ),
    "resources": (
        {"Cmd": ["sh"]},
        {"architecture": "arm64"},
        BundleOptions(memory=256 * 1024 * 1024, cpus=1.5, pids_limit=100,
                      cgroups_path="/ociimg/test", readonly_rootfs=True, network="host",
                      mounts=[BindMount("/srv/data", "/data", True), ("/srv/rw", "/rw", False)],
                      tmpfs=["/tmp", "/dev/shm"], cap_add=["NET_ADMIN"], cap_drop=["mknod"],
                      args=["echo", "hi"], seccomp=False),
    ),
}


def _golden_check(name: str, produced: Any, update: bool) -> None:
    path = GOLDEN / f"{name}.json"
    text = json.dumps(produced, indent=2, sort_keys=True) + "\n"
    if update:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    assert path.exists(), f"{path} missing: run pytest --update-golden and review it"
    assert json.loads(path.read_text()) == produced, f"{name}: output differs from {path}"


@pytest.mark.parametrize("name", sorted(GOLDEN_CASES))
def test_golden(name: str, rootfs: Path, validator: Any, update_golden: bool) -> None:
    cfg, top, options = GOLDEN_CASES[name]
    config = to_runtime_config(make_config(cfg, **top), options, rootfs)
    assert_valid(validator, config)
    seccomp = config["linux"].get("seccomp")
    if seccomp is not None:
        assert seccomp == profiles.default_seccomp_profile(
            config["annotations"]["org.opencontainers.image.architecture"])
        config["linux"]["seccomp"] = SECCOMP_PLACEHOLDER
    _golden_check(name, config, update_golden)


def test_golden_seccomp_amd64(update_golden: bool) -> None:
    _golden_check("seccomp-amd64", profiles.default_seccomp_profile("amd64"), update_golden)


# --- process.args -------------------------------------------------------------------------


def test_args_are_entrypoint_then_cmd(rootfs: Path) -> None:
    image = make_config({"Entrypoint": ["/bin/a", "x"], "Cmd": ["y", "z"]})
    assert bundle.build_args(image, BundleOptions()) == ["/bin/a", "x", "y", "z"]


def test_args_override_replaces_cmd_only(rootfs: Path) -> None:
    image = make_config({"Entrypoint": ["/bin/a"], "Cmd": ["y"]})
    assert bundle.build_args(image, BundleOptions(args=["q"])) == ["/bin/a", "q"]


def test_entrypoint_override_drops_image_cmd(rootfs: Path) -> None:
    image = make_config({"Entrypoint": ["/bin/a"], "Cmd": ["y"]})
    assert bundle.build_args(image, BundleOptions(entrypoint=["/bin/b"])) == ["/bin/b"]
    assert bundle.build_args(image, BundleOptions(entrypoint=["/bin/b"], args=["k"])) == [
        "/bin/b", "k"]


def test_no_command_is_an_error_with_a_hint(rootfs: Path) -> None:
    with pytest.raises(InvalidDocument) as err:
        to_runtime_config(make_config({}), BundleOptions(), rootfs)
    assert "give a command" in (err.value.hint or "")
    with pytest.raises(InvalidDocument):
        to_runtime_config(make_config({"Cmd": ["sh"]}), BundleOptions(entrypoint=[]), rootfs)


# --- process.env --------------------------------------------------------------------------


def _env(config: dict[str, Any]) -> dict[str, str]:
    pairs = [e.split("=", 1) for e in config["process"]["env"]]
    names = [p[0] for p in pairs]
    assert len(names) == len(set(names)), f"duplicate env names: {names}"
    return dict(pairs)


def test_path_added_only_if_absent(rootfs: Path) -> None:
    with_path = to_runtime_config(make_config({"Cmd": ["x"], "Env": ["PATH=/opt/bin"]}),
                                  BundleOptions(), rootfs)
    assert _env(with_path)["PATH"] == "/opt/bin"
    without = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(), rootfs)
    assert _env(without)["PATH"] == bundle.DEFAULT_PATH


def test_home_from_image_env_is_not_clobbered(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"], "User": "app", "Env": ["HOME=/custom"]})
    assert _env(to_runtime_config(image, BundleOptions(), rootfs))["HOME"] == "/custom"


def test_home_from_passwd_when_image_has_none(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"], "User": "app"})
    assert _env(to_runtime_config(image, BundleOptions(), rootfs))["HOME"] == "/home/app"
    image = make_config({"Cmd": ["x"], "User": "nohome"})
    assert _env(to_runtime_config(image, BundleOptions(), rootfs))["HOME"] == "/"


def test_image_env_is_kept_verbatim_and_in_order(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"], "Env": ["B=2", "A=1=one", "EMPTY="]})
    env = to_runtime_config(image, BundleOptions(), rootfs)["process"]["env"]
    assert env[:3] == ["B=2", "A=1=one", "EMPTY="]


def test_caller_env_overrides_by_name(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"], "Env": ["A=image", "PATH=/img"]})
    config = to_runtime_config(image, BundleOptions(env=["A=caller", "PATH=/mine", "A=last"]),
                               rootfs)
    env = _env(config)
    assert env["A"] == "last" and env["PATH"] == "/mine"


def test_term_only_with_terminal_and_not_over_image(rootfs: Path) -> None:
    plain = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(), rootfs)
    assert "TERM" not in _env(plain)
    tty = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(terminal=True), rootfs)
    assert _env(tty)["TERM"] == "xterm" and tty["process"]["terminal"] is True
    own = to_runtime_config(make_config({"Cmd": ["x"], "Env": ["TERM=vt100"]}),
                            BundleOptions(terminal=True), rootfs)
    assert _env(own)["TERM"] == "vt100"


@pytest.mark.parametrize("bad", ["NOEQUALS", "=value"])
def test_malformed_env_is_an_error(rootfs: Path, bad: str) -> None:
    with pytest.raises(InvalidDocument):
        to_runtime_config(make_config({"Cmd": ["x"], "Env": [bad]}), BundleOptions(), rootfs)
    with pytest.raises(InvalidDocument):
        to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(env=[bad]), rootfs)


# --- cwd ----------------------------------------------------------------------------------


def test_cwd_defaults_to_root_and_must_be_absolute(rootfs: Path) -> None:
    assert to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(),
                             rootfs)["process"]["cwd"] == "/"
    assert to_runtime_config(make_config({"Cmd": ["x"], "WorkingDir": "/w"}), BundleOptions(),
                             rootfs)["process"]["cwd"] == "/w"
    with pytest.raises(InvalidDocument):
        to_runtime_config(make_config({"Cmd": ["x"], "WorkingDir": "rel"}), BundleOptions(),
                          rootfs)


# --- users --------------------------------------------------------------------------------


def test_user_forms(rootfs: Path) -> None:
    assert resolve_user("", rootfs) == users.ExecUser(0, 0, (), "/root")
    assert resolve_user("app", rootfs) == users.ExecUser(1000, 1000, (10, 29), "/home/app")
    assert resolve_user("app:audio", rootfs) == users.ExecUser(1000, 29, (), "/home/app")
    assert resolve_user("app:7", rootfs) == users.ExecUser(1000, 7, (), "/home/app")
    # numeric: verbatim, no supplementary groups (conversion.md), passwd only gives gid/home
    assert resolve_user("1000", rootfs) == users.ExecUser(1000, 1000, (), "/home/app")
    assert resolve_user("1000:44", rootfs) == users.ExecUser(1000, 44, (), "/home/app")
    assert resolve_user("4242", rootfs) == users.ExecUser(4242, 0, (), None)
    assert resolve_user("4242:video", rootfs) == users.ExecUser(4242, 44, (), None)


def test_unknown_user_is_an_error(rootfs: Path) -> None:
    with pytest.raises(InvalidDocument, match="user 'nobody' not found in the image's "
                                              "/etc/passwd"):
        resolve_user("nobody", rootfs)
    with pytest.raises(InvalidDocument, match="group 'nogroup' not found"):
        resolve_user("app:nogroup", rootfs)
    with pytest.raises(InvalidDocument):
        to_runtime_config(make_config({"Cmd": ["x"], "User": "nobody"}), BundleOptions(),
                          rootfs)


def test_named_user_without_passwd_file_is_an_error(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidDocument, match="not found"):
        resolve_user("app", empty)
    assert resolve_user("5:6", empty) == users.ExecUser(5, 6, (), None)


@pytest.mark.parametrize("spec", ["4294967296", "4294967295", "99999999999999999999",
                                  "1:4294967296"])
def test_uid_overflow_is_rejected_not_wrapped(rootfs: Path, spec: str) -> None:
    with pytest.raises(InvalidDocument, match="out of range"):
        resolve_user(spec, rootfs)


@pytest.mark.parametrize("spec", ["-1", "0:-1"])
def test_negative_ids_are_rejected(rootfs: Path, spec: str) -> None:
    with pytest.raises(InvalidDocument, match="negative"):
        resolve_user(spec, rootfs)


@pytest.mark.parametrize("spec", ["0x10", "+16", "1_6", " 16", "16 ", "0:0x10", "huge"])
def test_non_decimal_ids_are_names_not_numbers(rootfs: Path, spec: str) -> None:
    # "0x10" is not uid 16; "huge" has a uid past 2^32 in passwd and must not wrap to 0.
    with pytest.raises(InvalidDocument, match="not found"):
        resolve_user(spec, rootfs)


def test_largest_valid_uid(rootfs: Path) -> None:
    assert resolve_user("4294967294:4294967294", rootfs).uid == 4294967294


@pytest.mark.parametrize("spec", [":", "app:", ":0"])
def test_empty_user_or_group_is_an_error(rootfs: Path, spec: str) -> None:
    with pytest.raises(InvalidDocument):
        resolve_user(spec, rootfs)


def test_passwd_symlink_out_of_rootfs_is_not_followed(tmp_path: Path, resolver: bool) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "passwd").write_text("evil:x:0:0::/root:/bin/sh\n")
    (host / "group").write_text("evil:x:0:\n")
    # Absolute and relative escapes both resolve inside the root, where nothing exists.
    os.symlink(str(host / "passwd"), root / "etc" / "passwd")
    os.symlink("../../../../../../../" + str(host / "group").lstrip("/"), root / "etc" / "group")
    before = {p.name: p.read_text() for p in host.iterdir()}
    with pytest.raises(InvalidDocument, match="user 'evil' not found"):
        resolve_user("evil", root)
    with pytest.raises(InvalidDocument, match="group 'evil' not found"):
        resolve_user("0:evil", root)
    assert {p.name: p.read_text() for p in host.iterdir()} == before


def test_passwd_symlink_inside_rootfs_is_followed_in_root(tmp_path: Path,
                                                          resolver: bool) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    (root / "real").mkdir()
    (root / "real" / "passwd").write_text("svc:x:77:78::/svc:/bin/sh\n")
    # An absolute link means the rootfs's /real, not the host's.
    os.symlink("/real/passwd", root / "etc" / "passwd")
    assert resolve_user("svc", root) == users.ExecUser(77, 78, (), "/svc")


def test_passwd_symlink_loop_is_an_error(tmp_path: Path, resolver: bool) -> None:
    root = tmp_path / "rootfs"
    (root / "etc").mkdir(parents=True)
    os.symlink("passwd2", root / "etc" / "passwd")
    os.symlink("passwd", root / "etc" / "passwd2")
    with pytest.raises(InvalidDocument, match="cannot read /etc/passwd: .*Too many levels"):
        resolve_user("app", root)


def test_passwd_through_dir_symlink_out_of_rootfs(tmp_path: Path, resolver: bool) -> None:
    root = tmp_path / "rootfs"
    root.mkdir()
    host = tmp_path / "host-etc"
    host.mkdir()
    (host / "passwd").write_text("evil:x:0:0::/root:/bin/sh\n")
    os.symlink(str(host), root / "etc")  # the whole /etc points at a host directory
    with pytest.raises(InvalidDocument, match="user 'evil' not found"):
        resolve_user("evil", root)


def test_passwd_that_is_a_fifo_or_dir_is_refused(tmp_path: Path, resolver: bool) -> None:
    root = tmp_path / "rootfs"
    (root / "etc" / "passwd").mkdir(parents=True)
    with pytest.raises(InvalidDocument, match="not a regular file|cannot read"):
        resolve_user("app", root)
    os.rmdir(root / "etc" / "passwd")
    os.mkfifo(root / "etc" / "passwd")  # must not hang reading it
    with pytest.raises(InvalidDocument, match="not a regular file"):
        resolve_user("app", root)


def test_user_database_dotdot_is_clamped(tmp_path: Path, resolver: bool) -> None:
    root = tmp_path / "r"
    (root / "etc").mkdir(parents=True)
    (root / "etc" / "passwd").write_text("inside\n")
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "passwd").write_text("outside\n")
    assert users.read_in_root(root, "/../../etc/passwd", 100) == b"inside\n"
    (root / "a").mkdir()
    os.symlink("../../..", root / "a" / "up")
    assert users.read_in_root(root, "/a/up/etc/passwd", 100) == b"inside\n"


# --- annotations --------------------------------------------------------------------------


def test_explicit_labels_win_over_generated_annotations(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"], "StopSignal": "SIGTERM",
                         "Labels": {"org.opencontainers.image.stopSignal": "SIGQUIT",
                                    "org.opencontainers.image.architecture": "label-arch"}},
                        created="2020-01-01T00:00:00Z")
    ann = to_runtime_config(image, BundleOptions(), rootfs)["annotations"]
    assert ann["org.opencontainers.image.stopSignal"] == "SIGQUIT"
    assert ann["org.opencontainers.image.architecture"] == "label-arch"
    assert ann["org.opencontainers.image.created"] == "2020-01-01T00:00:00Z"
    assert ann["org.opencontainers.image.os"] == "linux"


def test_label_values_are_copied_verbatim_never_interpreted(rootfs: Path) -> None:
    hostile = "$(touch /tmp/pwned) `id` ${HOME} {{.Host}} \n\x00"
    image = make_config({"Cmd": ["x"], "Labels": {"k": hostile}})
    config = to_runtime_config(image, BundleOptions(), rootfs)
    assert config["annotations"]["k"] == hostile
    assert config["process"]["args"] == ["x"]


def test_runtime_reserved_labels_are_dropped_and_reported(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"], "Labels": {
        "run.oci.keep_original_groups": "1",
        "org.systemd.property.ExecStartPre": "/bin/sh",
        "containerd.io/restart.loguri": "binary:///bin/sh",
        "ok": "fine"}})
    ann = to_runtime_config(image, BundleOptions(), rootfs)["annotations"]
    assert ann["ok"] == "fine"
    assert not any(k.startswith(("run.oci.", "org.systemd.", "containerd.io/")) for k in ann)
    assert bundle.unsafe_labels(image) == ["containerd.io/restart.loguri",
                                           "org.systemd.property.ExecStartPre",
                                           "run.oci.keep_original_groups"]


def test_exposed_ports_and_volumes_recorded(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"], "ExposedPorts": {"80/tcp": {}, "443/tcp": {}},
                         "Volumes": {"/var/lib/db": {}}})
    config = to_runtime_config(image, BundleOptions(), rootfs)
    assert config["annotations"]["org.opencontainers.image.exposedPorts"] == "443/tcp,80/tcp"
    assert config["annotations"][bundle.VOLUMES_ANNOTATION] == "/var/lib/db"
    # Volumes are recorded, not mounted: nothing of the image picks a host path.
    assert all(m["destination"] != "/var/lib/db" for m in config["mounts"])


def test_non_linux_image_is_refused(rootfs: Path) -> None:
    image = make_config({"Cmd": ["x"]}, os="windows")
    with pytest.raises(InvalidDocument, match="not supported"):
        to_runtime_config(image, BundleOptions(), rootfs)


# --- linux section --------------------------------------------------------------------------


def test_default_security_settings(rootfs: Path) -> None:
    config = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(), rootfs)
    caps = config["process"]["capabilities"]
    assert caps["bounding"] == caps["effective"] == caps["permitted"]
    assert set(caps["bounding"]) == set(profiles.DEFAULT_CAPABILITIES)
    assert caps["inheritable"] == [] and caps["ambient"] == []
    assert config["process"]["noNewPrivileges"] is True
    linux = config["linux"]
    assert [n["type"] for n in linux["namespaces"]] == ["pid", "mount", "ipc", "uts",
                                                        "network", "cgroup"]
    assert linux["maskedPaths"] == list(profiles.DEFAULT_MASKED_PATHS)
    assert linux["readonlyPaths"] == list(profiles.DEFAULT_READONLY_PATHS)
    assert linux["resources"]["devices"][0] == {"allow": False, "access": "rwm"}
    assert config["process"]["rlimits"] == [{"type": "RLIMIT_NOFILE", "hard": 1024,
                                             "soft": 1024}]
    assert "hostname" not in config and "cgroupsPath" not in linux


def test_non_root_user_gets_only_bounding_caps(rootfs: Path) -> None:
    config = to_runtime_config(make_config({"Cmd": ["x"], "User": "app"}),
                               BundleOptions(cap_add=["NET_BIND_SERVICE"]), rootfs)
    caps = config["process"]["capabilities"]
    assert set(caps["bounding"]) == set(profiles.DEFAULT_CAPABILITIES)
    assert caps["effective"] == caps["permitted"] == caps["ambient"] == ["CAP_NET_BIND_SERVICE"]


def test_capability_add_drop_and_all() -> None:
    assert "CAP_MKNOD" not in bundle.capability_set([], ["mknod"])
    assert "CAP_SYS_ADMIN" in bundle.capability_set(["cap_sys_admin"], [])
    assert bundle.capability_set(["ALL"], []) == list(profiles.ALL_CAPABILITIES)
    assert bundle.capability_set(["NET_ADMIN"], ["ALL"]) == ["CAP_NET_ADMIN"]
    assert bundle.capability_set([], ["ALL"]) == []
    with pytest.raises(InvalidDocument, match="unknown capability"):
        bundle.capability_set(["CAP_MAKE_COFFEE"], [])


def test_network_modes(rootfs: Path) -> None:
    def kinds(mode: str) -> list[str]:
        cfg = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(network=mode), rootfs)
        return [n["type"] for n in cfg["linux"]["namespaces"]]
    assert "network" in kinds("private") and "network" in kinds("none")
    assert "network" not in kinds("host")
    with pytest.raises(InvalidDocument):
        kinds("bridge")


@pytest.mark.parametrize("options", [BundleOptions(memory=0), BundleOptions(cpus=0.001),
                                     BundleOptions(pids_limit=0),
                                     BundleOptions(mounts=[("/a", "rel", False)]),
                                     BundleOptions(tmpfs=["tmp"])])
def test_bad_resource_and_mount_options(rootfs: Path, options: BundleOptions) -> None:
    with pytest.raises(InvalidDocument):
        to_runtime_config(make_config({"Cmd": ["x"]}), options, rootfs)


def test_caller_mount_replaces_default_at_same_destination(rootfs: Path) -> None:
    config = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(tmpfs=["/dev/shm"]),
                               rootfs)
    shm = [m for m in config["mounts"] if m["destination"] == "/dev/shm"]
    assert len(shm) == 1 and shm[0]["options"] == ["nosuid", "nodev", "noexec", "mode=1777"]
    bind = to_runtime_config(make_config({"Cmd": ["x"]}),
                             BundleOptions(mounts=[BindMount("/h", "/c", True)]), rootfs)
    assert bind["mounts"][-1] == {"destination": "/c", "type": "bind", "source": "/h",
                                  "options": ["rbind", "rprivate", "ro"]}


def test_seccomp_unconfined_when_disabled(rootfs: Path) -> None:
    config = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(seccomp=False), rootfs)
    assert "seccomp" not in config["linux"]


def test_config_does_not_alias_profile_data(rootfs: Path) -> None:
    config = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(), rootfs)
    config["mounts"][0]["options"].append("mutated")
    config["process"]["rlimits"][0]["hard"] = 1
    assert profiles.DEFAULT_MOUNTS[0]["options"] == []
    assert profiles.DEFAULT_RLIMITS[0]["hard"] == 1024


# --- profiles --------------------------------------------------------------------------------


def test_seccomp_profile_shape() -> None:
    profile = profiles.default_seccomp_profile("x86_64")
    assert profile["defaultAction"] == "SCMP_ACT_ERRNO" and profile["defaultErrnoRet"] == 1
    assert profile["architectures"] == ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"]
    assert profiles.default_seccomp_profile("arm64")["architectures"] == [
        "SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"]
    assert profiles.default_seccomp_profile("riscv64")["architectures"] == []


def _allowed_unconditionally(profile: dict[str, Any]) -> set[str]:
    return {n for r in profile["syscalls"] if r["action"] == "SCMP_ACT_ALLOW" and not r.get("args")
            for n in r["names"]}


def test_seccomp_denies_boundary_syscalls() -> None:
    profile = profiles.default_seccomp_profile("amd64")
    allowed = _allowed_unconditionally(profile)
    for name in ("mount", "umount2", "unshare", "setns", "keyctl", "add_key", "request_key",
                 "ptrace", "reboot", "kexec_load", "init_module", "bpf", "perf_event_open",
                 "clone", "clone3", "personality", "pivot_root", "open_by_handle_at"):
        assert name not in allowed, name
    assert not set(profiles.ALLOWED_SYSCALLS) & set(profiles.DENIED_SYSCALLS)
    for name in ("read", "write", "execve", "openat", "futex", "socket", "chroot", "exit_group",
                 "rt_sigreturn", "arch_prctl"):
        assert name in allowed, name
    assert "arch_prctl" not in _allowed_unconditionally(profiles.default_seccomp_profile("arm64"))


def test_seccomp_clone_rules() -> None:
    rules = profiles.default_seccomp_profile("amd64")["syscalls"]
    clone = [r for r in rules if r["names"] == ["clone"]]
    assert clone == [{"names": ["clone"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0x7E020000, "valueTwo": 0,
                                "op": "SCMP_CMP_MASKED_EQ"}]}]
    clone3 = [r for r in rules if r["names"] == ["clone3"]]
    assert clone3 == [{"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38}]
    personality = [r["args"][0]["value"] for r in rules if r["names"] == ["personality"]]
    assert personality == [0, 8, 0x20000, 0x20008, 0xFFFFFFFF]


def test_seccomp_follows_added_capabilities() -> None:
    caps = list(profiles.DEFAULT_CAPABILITIES) + ["CAP_SYS_PTRACE", "CAP_SYS_ADMIN"]
    profile = profiles.default_seccomp_profile("amd64", caps)
    allowed = _allowed_unconditionally(profile)
    assert {"ptrace", "mount", "unshare", "setns", "clone", "clone3"} <= allowed
    assert "reboot" not in allowed


def test_default_mounts_order_and_options() -> None:
    dests = [m["destination"] for m in profiles.DEFAULT_MOUNTS]
    assert dests == ["/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
                     "/sys/fs/cgroup"]
    pts = profiles.DEFAULT_MOUNTS[2]["options"]
    assert {"newinstance", "ptmxmode=0666", "mode=0620", "gid=5"} <= set(pts)
    assert len(profiles.DEFAULT_CAPABILITIES) == 14
    assert set(profiles.DEFAULT_CAPABILITIES) <= set(profiles.ALL_CAPABILITIES)


# --- write_bundle ----------------------------------------------------------------------------


def test_write_bundle_is_private_and_round_trips(tmp_path: Path, rootfs: Path) -> None:
    config = to_runtime_config(make_config({"Cmd": ["x"]}), BundleOptions(), rootfs)
    target = tmp_path / "bundle"
    target.mkdir(mode=0o755)
    write_bundle(target, config)
    assert stat.S_IMODE(target.stat().st_mode) == 0o700
    assert json.loads((target / "config.json").read_text()) == config
    assert stat.S_IMODE((target / "config.json").stat().st_mode) == 0o600
    assert [p.name for p in target.iterdir()] == ["config.json"]  # no temp file left behind
    write_bundle(target, {**config, "hostname": "again"})
    assert json.loads((target / "config.json").read_text())["hostname"] == "again"


def test_builtin_runtime_accepts_the_default_profile() -> None:
    # Contract with ociimg.runtime.seccomp: the profile we write is one the built-in runtime
    # can translate (no kernel calls here: build_filter only resolves names via libseccomp).
    from ociimg.runtime import seccomp

    filt = seccomp.build_filter(profiles.default_seccomp_profile())
    names = {rule.name for rule in filt.rules}
    assert {"read", "write", "execve", "clone", "clone3", "personality", "chroot"} <= names
    assert not names & {"mount", "unshare", "setns", "ptrace", "keyctl", "bpf"}
    assert not {"read", "openat", "execve", "futex"} & set(filt.skipped)

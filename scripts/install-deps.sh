#!/usr/bin/env bash
# Install everything ociimg, its tests and benchmarks need on Debian 12, as root, idempotently
# (apt only when something is missing). Used by scripts/demo.sh and .ci/run.
set -euo pipefail

cd "$(dirname "$0")/.."
export DEBIAN_FRONTEND=noninteractive PIP_ROOT_USER_ACTION=ignore
# A Debian system python (PEP 668 "externally managed") would refuse a plain pip install;
# these machines are throwaway, so installing into it is what we want.
export PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_BREAK_SYSTEM_PACKAGES=1

log() { printf '==> %s\n' "$*"; }

# Debian packages the tests use as payloads, reference tools or servers.
APT_PACKAGES=(
    docker-registry busybox-static skopeo umoci runc crun podman buildah conmon uidmap
    pigz zstd libseccomp2 iproute2 time catatonit curl debootstrap
    netavark aardvark-dns iptables docker.io gcc libc6-dev python3-docker docker-compose
)

missing_packages() {
    local pkg
    for pkg in "${APT_PACKAGES[@]}"; do
        if [[ "$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null)" != "install ok installed" ]]; then
            printf '%s\n' "$pkg"
        fi
    done
}

install_apt_packages() {
    local missing
    mapfile -t missing < <(missing_packages)
    if ((${#missing[@]} == 0)); then
        log "apt: all ${#APT_PACKAGES[@]} packages present"
        return
    fi
    log "apt: installing ${missing[*]}"
    # docker-registry's postinst would start the distro service on 0.0.0.0:5000: forbid
    # service starts during the install (policy-rc.d exit 101 = "action forbidden").
    local policy=/usr/sbin/policy-rc.d backup=""
    if [[ -e "$policy" ]]; then
        backup="$(mktemp)"
        cp -p "$policy" "$backup"
    fi
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    local rc=0
    {
        apt-get update -qq &&
            apt-get install -y -qq -o Dpkg::Use-Pty=0 "${missing[@]}" >/dev/null
    } || rc=$?
    if [[ -n "$backup" ]]; then
        mv "$backup" "$policy"
    else
        rm -f "$policy"
    fi
    return "$rc"
}

stop_distro_registry() {
    # Tests start their own registries on free loopback ports; a distro instance on :5000
    # is never used, and is stopped in case an earlier install started it.
    if command -v systemctl >/dev/null && systemctl is-active --quiet docker-registry 2>/dev/null; then
        systemctl stop docker-registry || true
    fi
    local pid
    for pid in $(pgrep -x docker-registry || true); do
        if tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q '/etc/docker/registry/config.yml'; then
            log "stopping distro docker-registry (pid $pid)"
            kill "$pid" || true
        fi
    done
}

install_python_packages() {
    if ! python3 -m pip --version >/dev/null 2>&1; then
        log "apt: installing python3-pip"
        apt-get update -qq && apt-get install -y -qq -o Dpkg::Use-Pty=0 python3-pip >/dev/null
    fi
    log "pip: installing ociimg with [test,fast] extras"
    python3 -m pip install -q -e ".[test,fast]"
}

install_apt_packages
stop_distro_registry
install_python_packages

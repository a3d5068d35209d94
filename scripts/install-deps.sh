#!/usr/bin/env bash
# Install everything ociimg and its tests need on Debian 12 (as root), idempotently.
# Used by scripts/demo.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

packages=(docker-registry busybox-static skopeo umoci runc crun podman buildah conmon uidmap
          pigz zstd libseccomp2 iproute2 curl time procps catatonit)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    # Installing docker-registry starts a distro service on 0.0.0.0:5000; forbid service
    # starts during the install (policy-rc.d exit 101) — tests run their own on 127.0.0.1.
    policy=/usr/sbin/policy-rc.d
    created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ "$created_policy" = 1 ] && rm -f "$policy"
fi
# In case a distro registry service got started anyway.
if command -v systemctl >/dev/null 2>&1; then systemctl stop docker-registry 2>/dev/null || true; fi
pkill -f '/usr/bin/docker-registry serve /etc/docker/registry/config.yml' 2>/dev/null || true

log=$(mktemp)
if ! python3 -m pip install -q --disable-pip-version-check -e ".[test,fast]" >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"

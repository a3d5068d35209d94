#!/usr/bin/env bash
# The main job, end to end, on a fresh Debian machine (as root):
# install what ociimg needs, start a Distribution registry on 127.0.0.1, build a real
# busybox image offline, push it with ociimg, then pull, inspect, unpack and run it; run,
# diff and commit a container from Python (examples/pull_run_commit.py); build an image
# from a Containerfile and serve a page from it on a published port; then the same store
# through the docker CLI and `ociimg serve`.
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/install-deps.sh

work=$(mktemp -d /tmp/ociimg-demo.XXXXXX)
export OCIIMG_ROOT="$work/root"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$work/registry.yml" <<YML
version: 0.1
storage:
  filesystem:
    rootdirectory: $work/registry
http:
  addr: 127.0.0.1:$port
log:
  level: error
YML
docker-registry serve "$work/registry.yml" > "$work/registry.log" 2>&1 &
registry_pid=$!
cleanup() {
    ociimg umount "$work/bundle-overlay" 2>/dev/null || true
    ociimg rm -f demo-web >/dev/null 2>&1 || true
    if [[ -n "${serve_pid:-}" ]]; then
        kill "$serve_pid" 2>/dev/null || true
        wait "$serve_pid" 2>/dev/null || true
    fi
    kill "$registry_pid" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$port/v2/" >/dev/null 2>&1 && break
    sleep 0.1
done

step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; "$@"; }

python3 fixtures/build_images.py "$work/layout" >/dev/null
image="127.0.0.1:$port/demo/busybox:1.0"
step ociimg copy "oci:$work/layout:busybox" "docker://$image"
step ociimg pull "$image"
step ociimg images
step ociimg inspect "$image"
step ociimg unpack "$image" "$work/bundle"
step ls "$work/bundle"
step ociimg run --rm "$image" sh -c 'echo "hello from $(hostname), pid $$"; id'
step python3 examples/pull_run_commit.py "$image"
mkdir -p "$work/ctx"
printf '<h1>built by ociimg</h1>\n' > "$work/ctx/index.html"
cat > "$work/ctx/Containerfile" <<EOF
FROM $image
COPY index.html /www/
RUN echo "written by a RUN step" > /www/run.txt && chmod -R a+rX /www
EXPOSE 80
CMD ["httpd", "-f", "-p", "80", "-h", "/www"]
EOF
step ociimg build -t demo/web:1 "$work/ctx"
step ociimg history demo/web:1
web_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
step ociimg run -d --name demo-web -p "127.0.0.1:$web_port:80" demo/web:1
for _ in $(seq 50); do
    curl -fsS "http://127.0.0.1:$web_port/" >/dev/null 2>&1 && break
    sleep 0.1
done
step curl -fsS "http://127.0.0.1:$web_port/" "http://127.0.0.1:$web_port/run.txt"
step ociimg ps
step ociimg rm -f demo-web

# The same store through docker's own CLI: ociimg serve speaks the Engine API.
export DOCKER_HOST="unix://$work/docker.sock"
ociimg serve -H "$DOCKER_HOST" 2>"$work/serve.log" &
serve_pid=$!
for _ in $(seq 100); do
    [[ -S "$work/docker.sock" ]] && /usr/bin/docker version >/dev/null 2>&1 && break
    sleep 0.1
done
step /usr/bin/docker images
step /usr/bin/docker run --rm demo/web:1 cat /www/run.txt
step /usr/bin/docker ps -a
step ociimg fsck

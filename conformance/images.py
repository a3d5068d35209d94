#!/usr/bin/env python3
"""Write the stand-in images critest v1.26 pulls, as one OCI image layout, from Debian's
busybox-static (fixtures/build_images.py's busybox), catatonit (the pause image) and the
Go stand-in in conformance/standin (nginx/httpd/nonewprivs, and busybox's missing ipcs).

    python3 conformance/images.py OUT_LAYOUT STANDIN_BINARY

It prints "LAYOUT_REF REPOSITORY:TAG" per image, REPOSITORY being the path it has upstream
(e.g. ``e2e-test-images/busybox:1.29-2``); conformance/critest.sh pushes each to a local
registry that containerd reaches through mirrors for registry.k8s.io, gcr.io and docker.io.
The digest-pinned ``test-image-digest@sha256:9700…`` cannot be rebuilt, so that spec fails
for every handler.
"""

from __future__ import annotations

import sys
import tarfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "fixtures"))

import build_images as bi  # noqa: E402  (fixtures/ is not a package)

E2E = "e2e-test-images/"
CRI = "k8s-staging-cri-tools/"
CATATONIT = Path("/usr/bin/catatonit")

PASSWD = b"""root:x:0:0:root:/root:/bin/sh
www-data:x:33:33:www-data:/var/www:/bin/false
default-user:x:1000:1000:Linux User,,,:/home/default-user:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
"""
GROUP = b"""root:x:0:
www-data:x:33:
default-user:x:1000:
group-defined-in-image:x:50000:default-user
nogroup:x:65534:
"""


def base_entries(standin: bytes) -> list[bi.Entry]:
    """busybox with the users the upstream images have (www-data 33, default-user 1000),
    its applets as hard links as in the upstream image (critest masks /bin/ls and expects
    sh to survive), and the stand-in as the applets Debian's busybox lacks."""
    out = []
    for entry in bi.busybox_entries():
        if entry.path in ("etc/passwd", "etc/group"):
            continue
        if entry.kind == tarfile.SYMTYPE and entry.link == "busybox":
            # containerd chmods a hard link to its header's mode: keep busybox's 0755.
            entry = bi.Entry(entry.path, tarfile.LNKTYPE, mode=0o755, link="bin/busybox")
        out.append(entry)
    out += [bi.file_("usr/local/bin/standin", standin, mode=0o755),
            bi.symlink("bin/ipcs", "/usr/local/bin/standin"),
            bi.symlink("bin/pgrep", "/usr/local/bin/standin")]
    out += [bi.file_("etc/passwd", PASSWD), bi.file_("etc/group", GROUP),
            bi.dir_("usr/sbin"), bi.dir_("usr/local"), bi.dir_("usr/local/bin"),
            bi.dir_("var/run"), bi.dir_("var/www")]
    # A hard link's target must come first in the tar ("bin/[" sorts before bin/busybox).
    return sorted(out, key=lambda e: (e.kind == tarfile.LNKTYPE, e.path))


def config(arch: str, layers: list[bi.Layer], title: str, **cfg: Any) -> dict[str, Any]:
    doc = bi.busybox_config(arch, layers, title)
    doc["config"].update(cfg)
    if cfg.get("Entrypoint"):
        del doc["config"]["Cmd"]
    return doc


def build(out: Path, standin: Path) -> list[str]:
    arch = bi.host_arch()
    layout = bi.Layout(out)
    gz = bi.OCI_LAYER_GZIP
    server = standin.read_bytes()
    base = bi.put_layer(layout, base_entries(server), gz)
    tags: dict[str, dict[str, Any]] = {}

    def image(name: str, extra: list[bi.Entry] | None = None, **cfg: Any) -> dict[str, Any]:
        layers = [base] + ([bi.put_layer(layout, extra, gz)] if extra else [])
        return bi.put_image(layout, config(arch, layers, name, **cfg), layers)

    busybox = image("busybox")
    tags[E2E + "busybox:1.29-2"] = busybox
    tags["library/busybox:latest"] = busybox
    pause = [bi.file_("pause", CATATONIT.read_bytes(), mode=0o755)]
    for tag in ("pause:3.6", "pause:3.7", "pause:3.8", "pause:3.9"):
        tags[tag] = image("pause", pause, Entrypoint=["/pause", "-P"])
    # The nginx specs read /proc/1/cmdline for nginx's "master process" title.
    nginx = [bi.symlink("usr/sbin/nginx", "/usr/local/bin/standin")]
    master = ["/usr/sbin/nginx", "-g", "daemon off; master process"]
    tags[E2E + "nginx:1.14-2"] = image("nginx", nginx, Entrypoint=master)
    tags[f"{CRI}hostnet-nginx-{arch}:latest"] = image(
        "hostnet-nginx", nginx, Entrypoint=master, Env=[bi.PATH_ENV, "PORT=12003"])
    httpd = [bi.symlink("usr/sbin/httpd", "/usr/local/bin/standin")]
    tags[E2E + "httpd:2.4.39-4"] = image("httpd", httpd,
                                         Entrypoint=["httpd", "-D", "FOREGROUND"])
    nnp = [bi.file_("usr/local/bin/nnp", server, mode=0o4755)]
    tags[E2E + "nonewprivs:1.3"] = image("nonewprivs", nnp, Entrypoint=["/usr/local/bin/nnp"])
    for name, user in (("test-image-user-uid", "1002"), ("test-image-user-username", "www-data"),
                       ("test-image-user-uid-group", "1003:1004"),
                       ("test-image-user-username-group", "www-data:1004"),
                       ("test-image-predefined-group", "1000")):
        tags[f"{CRI}{name}:latest"] = image(name, User=user)
    # Upstream ADDs a file named after the image, so each is a different image.
    for name in ("test-image-1", "test-image-2", "test-image-3", "test-image-latest"):
        tags[f"{CRI}{name}:latest"] = image(name, [bi.file_(name)])
    same = image("test-image-tags", [bi.file_("test-image-tags")])
    for tag in ("1", "2", "3"):
        tags[f"{CRI}test-image-tags:{tag}"] = same
    tagged = image("test-image-tag", [bi.file_("test-image-tag")])
    tags[f"{CRI}test-image-tag:test"] = tagged
    tags[f"{CRI}test-image-tag:all"] = tagged
    # Layout ref names stay simple (skopeo's oci: transport is strict about them); the
    # caller gets "REF REPOSITORY:TAG" lines.
    lines = []
    for i, (name, desc) in enumerate(sorted(tags.items())):
        layout.tag(f"img{i}", desc)
        lines.append(f"img{i} {name}")
    layout.finish()
    return lines


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__.strip().splitlines()[4].strip(), file=sys.stderr)
        return 2
    for line in build(Path(sys.argv[1]), Path(sys.argv[2])):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Pull an image, run a container that changes a file, commit the change, run the new image.

    python3 examples/pull_run_commit.py 127.0.0.1:5000/library/busybox:latest

Run as root (containers need namespaces and mounts). Uses the ociimg root from $OCIIMG_ROOT
(default /var/lib/ociimg); --insecure is implied for 127.0.0.1 registries only.
"""

from __future__ import annotations

import sys

import ociimg
from ociimg.containers import ContainerManager


def run_to_end(manager: ContainerManager, image: str, args: list[str],
               name: str) -> bytes:
    """Create, start, wait; the container's output (its log) once it has exited."""
    options = ociimg.CreateOptions(name=name, bundle=ociimg.BundleOptions(args=args or None))
    container = manager.create(ociimg.open_image(image), options)
    manager.start(container)
    code = manager.wait(container)
    output = b"".join(manager.logs(container))
    if code != 0:
        raise SystemExit(f"{name} exited with {code}: {output.decode(errors='replace')}")
    return output


def main(reference: str) -> None:
    insecure = reference.startswith(("127.0.0.1:", "localhost:", "[::1]:"))
    pulled = ociimg.pull(reference, insecure=insecure)
    print("pulled", pulled.reference, pulled.descriptor.digest)

    manager = ociimg.container_manager()
    run_to_end(manager, reference, ["sh", "-c", "echo hello from a commit > /greeting"],
               "example-writer")
    print("changes:", ociimg.diff("example-writer"))
    result = ociimg.commit("example-writer", "localhost/example:greeting",
                           message="add /greeting", changes=['CMD ["cat", "/greeting"]'])
    print("committed", result.name, result.descriptor.digest)
    manager.remove(manager.get("example-writer"))

    output = run_to_end(manager, result.name, [], "example-reader")
    print("the new image says:", output.decode().strip())
    manager.remove(manager.get("example-reader"))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1:5000/library/busybox:latest")

"""The documented Python API: what ``import ociimg`` offers.

The same calls the ``ociimg`` command line makes, with plain arguments: image names as a user
types them (``busybox``, ``127.0.0.1:5000/app:1``, ``oci:DIR:TAG``), the ociimg root as a
path (default: ``$OCIIMG_ROOT``, else ``/var/lib/ociimg`` for root), options as keywords.
Every failure is an :class:`ociimg.errors.OciimgError` whose ``message`` and ``hint`` are
written for a person. Nothing here installs signal handlers or touches the process's stdio,
so the calls work from any thread of a larger program.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ociimg.bundle import BundleOptions
from ociimg.commands.changes import CommitOptions, CommitResult
from ociimg.commands.resolve import ResolvedImage, resolve_image
from ociimg.commands.unpack import UnpackOptions, UnpackResult, unpack_image
from ociimg.containers import ContainerManager, CreateOptions  # noqa: F401  (re-exported)
from ociimg.events import NullProgress, Progress
from ociimg.reference import parse_registry_name
from ociimg.registry import PullOptions, PullResult, PushOptions
from ociimg.spec import Platform
from ociimg.store import Store
from ociimg.store.layout import default_root, make_private


def _root(root: str | Path | None) -> Path:
    path = Path(root).absolute() if root is not None else default_root().absolute()
    make_private(path)
    return path


def pull(reference: str, *, root: str | Path | None = None, platform: str | None = None,
         insecure: bool = False, progress: Progress | None = None) -> PullResult:
    """Download an image from a registry into the store (resumable, verified; the name is
    tagged only when every blob is present)."""
    from ociimg.registry import pull as pull_image

    ref = parse_registry_name(reference, "pull takes a registry reference, not a layout",
                              hint="copy a layout with: ociimg copy oci:DIR:TAG NAME")
    options = PullOptions(platform=Platform.parse(platform) if platform else None,
                          insecure=insecure)
    return pull_image(ref, Store.open(_root(root)), options, progress or NullProgress())


def push(image: str, destination: str | None = None, *, root: str | Path | None = None,
         insecure: bool = False, progress: Progress | None = None) -> str:
    """Upload a stored image to a registry (digest preserved); returns the manifest digest."""
    from ociimg.commands.resolve import store_name
    from ociimg.reference import parse_reference
    from ociimg.registry import push as push_image

    store = Store.open(_root(root))
    name = store_name(store, image)
    digest = push_image(store, name, parse_reference(destination or name),
                        PushOptions(insecure=insecure), progress or NullProgress())
    return str(digest)


def open_image(name: str, *, root: str | Path | None = None, platform: str | None = None,
          insecure: bool = False, progress: Progress | None = None) -> ResolvedImage:
    """An image by what a user would type (store name, ``oci:DIR[:TAG]``, or a registry
    reference, pulled when missing) with its manifest and config read and checked."""
    return resolve_image(name, _root(root),
                         platform=Platform.parse(platform) if platform else None,
                         pull_options=PullOptions(insecure=insecure), progress=progress)


def inspect(name: str, *, root: str | Path | None = None,
            platform: str | None = None) -> dict[str, Any]:
    """The document ``ociimg inspect --json`` prints (name, digest, manifest, config, layers)."""
    from ociimg.commands.inspect import inspect_image

    return inspect_image(name, _root(root), Platform.parse(platform) if platform else None)


def unpack(name: str, bundle: str | Path, *, root: str | Path | None = None,
           args: list[str] | None = None, overlay: bool = False, force: bool = False,
           platform: str | None = None, progress: Progress | None = None) -> UnpackResult:
    """Write a runtime-spec bundle (config.json + rootfs) for ``name`` at ``bundle``; runc,
    crun and ``ociimg-runtime`` run it. ``overlay``: a rootfs mounted over the shared
    snapshots (release it with :func:`umount`) instead of a flattened copy."""
    resolved = open_image(name, root=root, platform=platform, progress=progress)
    options = UnpackOptions(overlay=overlay, force=force, bundle=BundleOptions(args=args))
    return unpack_image(resolved, Path(bundle), _root(root), options, progress)


def umount(bundle: str | Path, *, root: str | Path | None = None) -> None:
    """Release the overlay rootfs of a bundle made with ``unpack(..., overlay=True)``."""
    from ociimg.commands.unpack import umount_bundle

    umount_bundle(Path(bundle), _root(root))


def container_manager(*, root: str | Path | None = None,
                      runtime_root: str | Path | None = None) -> ContainerManager:
    """The container manager (create, start, wait, logs, exec, stop, kill, remove, list)
    over the ociimg root; ``runtime_root`` holds the runtime's state (default /run/ociimg).
    Containers are run by a monitor process of their own: they outlive the caller."""
    return ContainerManager(_root(root),
                            runtime_root=Path(runtime_root) if runtime_root else None)


def diff(container: str, *, root: str | Path | None = None) -> list[tuple[str, str]]:
    """What changed in a container's filesystem, as ``docker diff``: (kind, path) pairs,
    kind ``A`` added, ``C`` changed, ``D`` deleted, sorted by path."""
    from ociimg.commands.changes import container_changes

    return container_changes(_root(root), container)


def commit(container: str, name: str | None = None, *, root: str | Path | None = None,
           message: str = "", author: str = "", changes: list[str] | None = None,
           pause: bool = True) -> CommitResult:
    """A new image in the store whose top layer is the container's changes (``docker
    commit``); ``changes`` are Dockerfile instructions (``CMD ["x"]``, ``ENV K=V``, ...)."""
    from ociimg.commands.changes import commit_container

    options = CommitOptions(name=name, message=message, author=author,
                            changes=tuple(changes or ()), pause=pause)
    return commit_container(_root(root), container, options)


def build_image(context: str | Path, *, root: str | Path | None = None,
                file: str | None = None, tags: list[str] | None = None,
                build_args: dict[str, str] | None = None, target: str | None = None,
                no_cache: bool = False, timestamp: int | None = None,
                network: str = "private", progress: Progress | None = None) -> Any:
    """Build the Containerfile in the ``context`` directory (or ``file``) into the store
    (``ociimg build``); returns a BuildResult (``image_id``, ``descriptor``, ``tags``).
    RUN steps run as containers; nothing is tagged unless the whole build succeeds."""
    from ociimg.build.builder import BuildOptions
    from ociimg.commands.building import BuildRequest, build_image

    options = BuildOptions(tags=list(tags or ()), build_args=dict(build_args or {}),
                           target=target, no_cache=no_cache, timestamp=timestamp,
                           network=network)
    return build_image(_root(root), BuildRequest(str(context), file), options,
                       progress=progress)

"""The builder: a parsed Containerfile → an image in the store.

Stages run in dependency order (:mod:`ociimg.build.stages`), only those the target needs.
Each filesystem step (RUN, COPY, ADD, a WORKDIR that creates its dir) works on an active
snapshot prepared over the stage's committed chain: RUN as a container
(:mod:`ociimg.build.steps`), COPY/ADD written into it directly (:mod:`ociimg.build.copy`).
The step's layer is the snapshot's diff, stored as a blob and committed as the next
chain; a step that changed nothing adds no layer (its history entry is ``empty_layer``).
Metadata steps only change the stage's config. The step cache
(:mod:`ociimg.build.cache`) skips a step whose inputs are unchanged.

History uses BuildKit's form (``RUN /bin/sh -c make # buildkit``, ``COPY src /dst #
buildkit``, ``ENV A=b``). Times: ``--timestamp``/SOURCE_DATE_EPOCH sets every time and
clamps file mtimes in the layers; otherwise a layer's time is when its step first ran
(kept in the cache) and the image's is the newest of them, so a fully cached rebuild
writes the same image.

Nothing is tagged until the whole image is stored; the store lease held for the build
keeps gc from sweeping layers written but not yet referenced. Every active snapshot,
view and container a build makes is removed on every exit path (Ctrl-C included).
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ociimg import spec
from ociimg.build import copy as copying
from ociimg.build import metadata
from ociimg.build.cache import CachedStep, StepCache, step_key
from ociimg.build.stages import (
    PROXY_ARGS,
    StageState,
    build_order,
    from_reference,
    parse_mount_fields,
    platform_args,
    stage_by_name,
)
from ociimg.build.steps import RunRequest, check_network, run_step
from ociimg.bundle import BindMount
from ociimg.containers.resolved import ResolvedImage
from ociimg.digest import Digest
from ociimg.errors import BuildError, OciimgError, StepFailed
from ociimg.events import NullProgress, Progress
from ociimg.image.writer import NewLayer, copy_blobs, format_time, write_image, write_layer
from ociimg.spec import Descriptor, Platform, canonical_json, chain_ids, parse_config
from ociimg.store import Store

TYPE_CHECKING = False
if TYPE_CHECKING:
    from ociimg.build.context import BuildContext
    from ociimg.build.dockerfile import Dockerfile, Instruction, Stage
    from ociimg.layers.snapshots import SnapshotStore

# (image text, platform, pull) → the image, pulled into the store if needed (the caller's
# resolver: commands know registries, the builder does not).
ResolveImage = Callable[[str, "Platform | None", bool], ResolvedImage]



@dataclass
class BuildOptions:
    tags: list[str] = field(default_factory=list)
    build_args: dict[str, str] = field(default_factory=dict)
    target: str | None = None
    no_cache: bool = False
    pull: bool = False
    platform: Platform | None = None
    network: str = "private"
    secrets: dict[str, Path] = field(default_factory=dict)
    squash: bool = False
    compression: str = "gzip"
    timestamp: int | None = None       # SOURCE_DATE_EPOCH
    labels: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class BuildResult:
    descriptor: Descriptor
    image_id: Digest                   # the config's digest (docker's image ID)
    tags: tuple[str, ...]
    steps: int
    cached: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": str(self.image_id), "digest": str(self.descriptor.digest),
                "tags": list(self.tags), "steps": self.steps, "cached": self.cached}


@dataclass
class _StageResult:
    """A stage's image so far: its layers (base ones included), history, config state."""

    platform: Platform
    layers: list[Descriptor]
    diff_ids: list[Digest]
    history: list[dict[str, Any]]
    chain: Digest | None
    state: StageState
    base_created: str | None
    author: str | None = None
    created: list[datetime] = field(default_factory=list)  # of the layers this build added
    new_layers: int = 0
    base_history: int = 0  # history entries from before this stage's own steps

    def copy(self) -> _StageResult:
        import copy
        return copy.deepcopy(self)


class Builder:
    def __init__(self, root: Path, df: Dockerfile, context: BuildContext | None,
                 options: BuildOptions, resolve: ResolveImage,
                 progress: Progress | None = None) -> None:
        from ociimg.layers.snapshots import SnapshotStore
        self.root = Path(root)
        self.df = df
        self.context = context
        self.options = options
        self.resolve = resolve
        self.progress = progress or NullProgress()
        self.store = Store.open(self.root)
        self.snapshots: SnapshotStore = SnapshotStore(self.root / "snapshots")
        self.cache = StepCache(self.root)
        self.results: dict[int, _StageResult] = {}
        self.steps = 0
        self.cached = 0
        self._step_no = 0
        self._total = 0
        self._stack = contextlib.ExitStack()
        self._views: dict[str, Path] = {}  # --from roots by chain, mounted until the end
        self._work: Path | None = None      # temp files of this build (secrets, downloads)
        build_platform = Platform.host()
        target = options.platform or build_platform
        self.meta = platform_args(target, build_platform)
        self._meta_context = metadata.Context(df.escape, options.build_args, self.meta)
        self.now = datetime.now(UTC).replace(microsecond=0)

    # Entry -------------------------------------------------------------------------------
    def build(self) -> BuildResult:
        from ociimg.expand import expand
        for ins in self.df.meta_args:
            for name, default in metadata.arg_decls(ins, self.meta, self.df.escape):
                value = self.options.build_args.get(name, default)
                if value is not None:
                    self.meta[name] = value
        bases = {s.index: expand(s.base, self.meta, escape=self.df.escape)
                 for s in self.df.stages}
        order = build_order(self.df, bases, self.options.target)
        self._total = sum(len(self.df.stages[i].instructions) + 1 for i in order)
        with self.store.lease(), self._stack:
            for index in order:
                self.results[index] = self._run_stage(self.df.stages[index], bases[index])
            final = self.results[order[-1]]
            self._warn_unused_args()
            return self._write(final)

    def _warn_unused_args(self) -> None:
        """The classic builder's warning: a --build-arg no ARG declared (proxy ARGs are
        predefined, and so never unused)."""
        declared = set(self.meta)
        for r in self.results.values():
            declared.update(r.state.args)
        for ins in [*self.df.meta_args, *(i for s in self.df.stages for i in s.instructions)]:
            if ins.keyword == "ARG":
                declared.update(n for n, _ in metadata.arg_decls(ins, {}, self.df.escape))
        unused = sorted(set(self.options.build_args) - declared - PROXY_ARGS)
        if unused:
            self.progress.log(f"warning: build args not consumed: {', '.join(unused)}")

    # Stages ------------------------------------------------------------------------------
    def _run_stage(self, stage: Stage, base: str) -> _StageResult:
        self._announce(f"FROM {base}" + (f" AS {stage.name}" if stage.name else ""))
        result = self._from(stage, base)
        for ins in self._onbuild_triggers(result):
            self._dispatch(stage, result, ins, trigger=True)
        for ins in stage.instructions:
            self._announce(ins.original)
            self._dispatch(stage, result, ins)
        return result

    def _from(self, stage: Stage, base: str) -> _StageResult:
        parent = stage_by_name(self.df, base)
        if parent is not None:
            result = self.results[parent].copy()
            result.created, result.new_layers = [], 0
            result.base_history = len(result.history)
            result.state.sets_cmd = False
            return result
        platform = self._stage_platform(stage)
        if base == "scratch":
            return _StageResult(platform, [], [], [], None, StageState.from_base({}, {}),
                                None)
        image = self._image(base, platform)
        return _StageResult(image.config.platform, list(image.manifest.layers),
                            list(image.config.diff_ids), [dict(h) for h in image.config.history],
                            image.chain()[-1] if image.config.diff_ids else None,
                            StageState.from_base(image.config.config, {}),
                            image.config.created, image.config.author,
                            base_history=len(image.config.history))

    def _stage_platform(self, stage: Stage) -> Platform:
        from ociimg.expand import expand
        if stage.platform:
            return Platform.parse(expand(stage.platform, self.meta, escape=self.df.escape))
        return self.options.platform or Platform.host()

    def _image(self, text: str, platform: Platform | None) -> ResolvedImage:
        """An image (FROM, COPY --from): in the store, its layers unpacked as snapshots."""
        image = self.resolve(text, platform, self.options.pull)
        if image.store.path != self.store.path:
            copy_blobs(image.store, self.store, [image.manifest.config, *image.manifest.layers])
        self.snapshots.unpack_image(image.store, image.manifest, image.config, self.progress)
        return image

    def _onbuild_triggers(self, result: _StageResult) -> list[Instruction]:
        triggers, result.state.base_onbuild = result.state.base_onbuild, []
        if not triggers:
            return []
        from ociimg.build.dockerfile import parse
        parsed = parse("FROM scratch\n" + "\n".join(triggers), "ONBUILD")
        return list(parsed.stages[0].instructions)

    def _announce(self, text: str) -> None:
        """A step starts: ``start`` with its number and text; its output comes as ``log``
        lines, and ``done`` says "cached" when the cache had it."""
        self._step_no += 1
        self.progress.start(f"step-{self._step_no}", f"STEP {self._step_no}/{self._total}: "
                            f"{text}", None)

    # Dispatch ----------------------------------------------------------------------------
    def _dispatch(self, stage: Stage, r: _StageResult, ins: Instruction,
                  trigger: bool = False) -> None:
        handler = getattr(self, f"_do_{ins.keyword.lower()}", None)
        if handler is None and ins.keyword not in metadata.HANDLERS:
            raise BuildError(f"{self.df.filename}:{ins.line}: unknown instruction "
                             f"{ins.keyword}")
        try:
            if handler is not None:
                handler(stage, r, ins)
            else:
                created_by = metadata.apply(r.state, ins, self._meta_context)
                r.history.append({"created_by": created_by, "empty_layer": True})
        except StepFailed:
            raise
        except OciimgError as exc:
            if exc.message.startswith(f"{self.df.filename}:"):
                raise
            where = f"{self.df.filename}:{ins.line}: {ins.keyword}"
            raise BuildError(f"{where}{' (ONBUILD)' if trigger else ''}: {exc.message}",
                             hint=exc.hint) from None

    def _env(self, r: _StageResult) -> dict[str, str]:
        return r.state.expansion_env()

    # Filesystem steps ----------------------------------------------------------------------
    def _do_workdir(self, stage: Stage, r: _StageResult, ins: Instruction) -> None:
        from ociimg.expand import expand
        path = expand(ins.args[0], self._env(r), escape=self.df.escape)
        path = posixpath.normpath(posixpath.join(r.state.workdir(), path))
        r.state.config["WorkingDir"] = path
        user = r.state.config.get("User") or ""

        def work(key: str) -> None:
            with self._mounted(key) as (view, rootfd):
                owner = _owner_of(user, view) if user else (0, 0)
                copying.make_dir(rootfd, path, owner)

        self._fs_step(r, {"op": "WORKDIR", "path": path, "user": user}, work,
                      f"WORKDIR {path}")

    def _do_run(self, stage: Stage, r: _StageResult, ins: Instruction) -> None:
        argv, pipes = self._run_argv(r, ins)
        network = check_network(ins.flags.get("network", [self.options.network])[-1])
        if network == "host" and check_network(self.options.network) != "host":
            # Whoever wrote the Containerfile (a context from anywhere) must not pick the
            # host's network, with its loopback services (an API socket on TCP...): the
            # one who runs the build allows it (BuildKit's network.host entitlement).
            raise BuildError("RUN --network=host: the build was not given the host's network",
                             hint="build with --network host to allow it")
        env = r.state.run_env(self.options.build_args)
        mounts, tmpfs, mount_keys = self._run_mounts(stage, r, ins)
        request = RunRequest(argv, env, r.state.workdir(), r.state.config.get("User") or "",
                             network, mounts + pipes + _host_network_files(network), tmpfs)
        shown_args = {k: v for k, v in r.state.args.items()}
        created_by = "RUN " + (f"|{len(shown_args)} " + " ".join(
            f"{k}={v}" for k, v in shown_args.items()) + " " if shown_args else "") + \
            " ".join(argv) + " # buildkit"
        label = f"{self.df.filename}:{ins.line}: RUN"

        def work(key: str) -> None:
            run_step(self.root, self.snapshots, key, self._container_image(r), request,
                     self.progress, label)

        key = {"op": "RUN", "argv": argv, "env": env, "cwd": request.cwd, "user": request.user,
               "network": network, "mounts": mount_keys,
               "heredocs": [h.content for h in ins.heredocs]}
        self._fs_step(r, key, work, created_by)

    def _run_argv(self, r: _StageResult, ins: Instruction) -> tuple[list[str], list[BindMount]]:
        if ins.json_form:
            return list(ins.args), []
        text = ins.args[0]
        if len(ins.heredocs) == 1 and text.strip().lstrip("0123456789").startswith("<<") \
                and len(text.split()) == 1:
            body = ins.heredocs[0].content
            if body.startswith("#!"):  # a script with its own interpreter: run as a file
                name = ins.heredocs[0].name
                if "/" in name or name in (".", ".."):  # its file's name in /dev/pipes
                    raise BuildError(f"RUN <<{name}: a heredoc run as a script needs a "
                                     "plain name", hint="use e.g. RUN <<EOF")
                path = self._temp_file(body.encode(), 0o755)
                target = f"/dev/pipes/{name}"
                return [target], [BindMount(str(path), target, readonly=True)]
            return [*r.state.shell, body], []
        if ins.heredocs:  # anything else: the heredocs handed back to the shell as written
            script = text + "\n" + "".join(
                h.content + ("" if h.content.endswith("\n") else "\n") + h.name + "\n"
                for h in ins.heredocs)
            return [*r.state.shell, script], []
        return [*r.state.shell, text], []

    def _temp_file(self, data: bytes, mode: int) -> Path:
        work = self._workdir()
        path = work / f"file-{secrets.token_hex(6)}"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            os.write(fd, data)
        finally:
            os.close(fd)
        os.chmod(path, mode)
        return path

    def _workdir(self) -> Path:
        if self._work is None:
            base = self.root / "build-cache"
            base.mkdir(parents=True, exist_ok=True, mode=0o700)
            self._work = Path(tempfile.mkdtemp(dir=base, prefix=".work-"))
            self._stack.callback(_remove_tree, self._work)
        return self._work

    def _run_mounts(self, stage: Stage, r: _StageResult, ins: Instruction
                    ) -> tuple[list[BindMount], list[str], list[Any]]:
        from ociimg.expand import expand
        mounts: list[BindMount] = []
        tmpfs: list[str] = []
        keys: list[Any] = []
        for text in ins.flags.get("mount", []):
            fields = parse_mount_fields(expand(text, self._env(r), escape=self.df.escape))
            kind = fields.get("type", "bind")
            target = fields.get("target", "")
            if kind == "secret":
                target = target or f"/run/secrets/{fields.get('id', '')}"
            if not target.startswith("/"):
                target = posixpath.join(r.state.workdir(), target) if target else ""
            if not target:
                raise BuildError(f"--mount={text}: no target", hint="add target=/path")
            if kind == "cache":
                mounts.append(BindMount(str(self._cache_mount(fields, target)), target))
                keys.append(["cache", target])
            elif kind == "tmpfs":
                tmpfs.append(target)
                keys.append(["tmpfs", target])
            elif kind == "secret":
                mount = self._secret_mount(fields, target)
                if mount is not None:
                    mounts.append(mount)
                keys.append(["secret", target])  # its content is never part of the key
            elif kind == "bind":
                source, digest = self._bind_source(stage, fields)
                readonly = fields.get("rw", "false") != "true"
                if not readonly:
                    copy = self._workdir() / f"rw-{secrets.token_hex(6)}"
                    _copy_tree(source, copy)
                    source = copy
                mounts.append(BindMount(str(source), target, readonly=readonly))
                keys.append(["bind", target, digest, readonly])
            else:
                raise BuildError(f"--mount type={kind}: not supported",
                                 hint="use type=bind, cache, secret or tmpfs")
        return mounts, tmpfs, keys

    def _cache_mount(self, fields: Mapping[str, str], target: str) -> Path:
        ident = fields.get("id") or target
        path = self.root / "build-cache" / "mounts" / Digest.of(ident.encode()).hex
        if not path.is_dir():
            mode, uid, gid = _mount_ids(fields, "755", "cache")
            path.mkdir(parents=True, mode=0o755)
            os.chmod(path, mode)
            os.chown(path, uid, gid)
        return path

    def _secret_mount(self, fields: Mapping[str, str], target: str) -> BindMount | None:
        ident = fields.get("id") or posixpath.basename(target)
        source = self.options.secrets.get(ident)
        if source is None:
            if fields.get("required", "false") == "true":
                raise BuildError(f"secret {ident!r} is required but was not given",
                                 hint=f"pass it: --secret id={ident},src=PATH")
            return None
        mode, uid, gid = _mount_ids(fields, "0400", "secret")
        copy = self._temp_file(Path(source).read_bytes(), mode)
        os.chown(copy, uid, gid)
        return BindMount(str(copy), target, readonly=True)

    def _bind_source(self, stage: Stage, fields: Mapping[str, str]) -> tuple[Path, str]:
        source = fields.get("source", "/").lstrip("/") or "."
        ref = fields.get("from")
        if ref is None:
            context = self._need_context()
            context.resolve(source)  # the one-line errors: ../x, links out, excluded
            return self._pinned(context.root, source), context.digest([source])
        root, digest = self._source_root(stage, ref)
        from ociimg.oskit.paths import resolve_in_dir
        try:
            fd = resolve_in_dir(root, source)
        except OSError as exc:
            raise BuildError(f"--mount from={ref},source={source}: {exc.strerror}") from None
        try:
            # The runtime is another process: it gets the host path the resolution ended
            # at (inside the read-only view, which nothing changes during the build).
            resolved = os.readlink(f"/proc/self/fd/{fd}")
        finally:
            os.close(fd)
        return Path(resolved), f"{digest}:{source}"

    def _pinned(self, root: Path, source: str) -> Path:
        """``source`` resolved inside ``root`` and bind-mounted (read-only) at a private
        path of this build, which the runtime mounts then. Handing it the context path
        itself let whoever can write the context swap a dir for a symlink to any host
        dir between the check and the runtime's mount (a race; 5 builds in 30 won)."""
        from ociimg.oskit import linux
        from ociimg.oskit.paths import resolve_in_dir
        try:
            fd = resolve_in_dir(root, source)
        except OSError as exc:
            raise BuildError(f"--mount source={source}: {exc.strerror}") from None
        try:
            target = self._workdir() / f"bind-{secrets.token_hex(6)}"
            if os.path.isdir(f"/proc/self/fd/{fd}"):
                target.mkdir(mode=0o700)
            else:
                target.touch(mode=0o600)
            linux.mount(f"/proc/self/fd/{fd}", target, None, linux.MS.BIND)
            self._stack.callback(_unmount, target)
            # Read-only on the host side too: nothing below it can be removed with the
            # work dir, even if the unmount failed.
            linux.mount(None, target, None, linux.MS.BIND | linux.MS.REMOUNT | linux.MS.RDONLY)
        finally:
            os.close(fd)
        return target

    def _need_context(self) -> BuildContext:
        if self.context is None:
            raise BuildError("this step reads the build context, but none was given",
                             hint="pass a context directory (or - for a tar on stdin)")
        return self.context

    def _container_image(self, r: _StageResult) -> ResolvedImage:
        doc = {**r.platform.to_json(), "config": r.state.config,
               "rootfs": {"type": "layers", "diff_ids": [str(d) for d in r.diff_ids]}}
        raw = canonical_json(doc)
        config = parse_config(raw, "build step config")
        desc = Descriptor(spec.OCI_MANIFEST, Digest.of(raw), len(raw))
        return ResolvedImage(self.store, "build", desc, None, config)  # type: ignore[arg-type]

    # COPY / ADD ---------------------------------------------------------------------------
    def _do_copy(self, stage: Stage, r: _StageResult, ins: Instruction) -> None:
        self._copy(stage, r, ins, add=False)

    def _do_add(self, stage: Stage, r: _StageResult, ins: Instruction) -> None:
        self._copy(stage, r, ins, add=True)

    def _copy(self, stage: Stage, r: _StageResult, ins: Instruction, *, add: bool) -> None:
        from ociimg.expand import expand, expand_heredoc
        words = self._meta_context.words(r.state, ins)
        if len(words) < 2:
            raise BuildError(f"{ins.keyword} requires at least two arguments")
        *sources, dest = words
        dest = copying.dest_path(dest, r.state.workdir())
        env = self._env(r)
        chmod_text = ins.flags.get("chmod", [None])[-1]
        chmod = copying.parse_chmod(chmod_text) if chmod_text else None
        chown = ins.flags.get("chown", [None])[-1]
        chown = expand(chown, env, escape=self.df.escape) if chown else None
        ref = ins.flags.get("from", [None])[-1]
        heredocs = {h.name: h for h in ins.heredocs}
        files: list[tuple[str, bytes]] = []
        plain: list[str] = []
        for src in sources:
            name = src.lstrip("0123456789")
            if name.startswith("<<") and name[2:].lstrip("-").strip("'\"") in heredocs:
                h = heredocs[name[2:].lstrip("-").strip("'\"")]
                body = expand_heredoc(h.content, env, escape=self.df.escape) if h.expand \
                    else h.content
                files.append((h.name, body.encode()))
            else:
                plain.append(src)
        many_error = BuildError(f"When using {ins.keyword} with more than one source file, "
                                "the destination must be a directory and end with a /")
        if len(sources) > 1 and not dest.endswith("/"):
            raise many_error
        if ref is not None:
            src_root, src_digest = self._source_root(stage, expand(ref, env,
                                                                   escape=self.df.escape))
            matches = _match_in_root(src_root, plain)
            owner_keep = True
            excluded = None
        elif add and plain and all(_is_url(p) for p in plain):
            src_root, matches, src_digest = self._downloads(plain)
            _check_checksum(ins.flags.get("checksum", [None])[-1], src_root, matches)
            owner_keep, excluded = False, None
        else:
            if ins.flags.get("checksum"):
                raise BuildError("ADD --checksum is for URL sources only")
            src_root, src_digest, matches, excluded = self._context_sources(plain, add)
            owner_keep = False
        excludes = [expand(p, env, escape=self.df.escape) for p in ins.flags.get("exclude", [])]
        if excludes:
            matches, excluded = _apply_excludes(matches, excluded, excludes)
        parents = ins.flags.get("parents", ["false"])[-1] == "true"
        as_dir = parents or len(matches) + len(files) > 1  # a wildcard: one source, many
        if as_dir and not dest.endswith("/"):
            raise many_error
        archives = self._archives(src_root, matches) \
            if add and ref is None and not any(_is_url(p) for p in plain) else set()
        created_by = f"{ins.keyword} " + " ".join(sources) + f" {dest} # buildkit"
        key = {"op": ins.keyword, "sources": matches, "dest": dest, "chmod": chmod_text,
               "chown": chown, "from": ref, "content": src_digest,
               "files": [[n, Digest.of(d).hex] for n, d in files],
               "archives": sorted(archives), "exclude": excludes, "parents": parents}

        def work(step_key_: str) -> None:
            with self._mounted(step_key_) as (view, rootfd):
                owner = _owner_of(chown, view) if chown else None
                options = copying.CopyOptions(
                    owner=owner if owner is not None else (None if owner_keep else (0, 0)),
                    chmod=chmod, xattrs=owner_keep, excluded=excluded,
                    parents_owner=owner or (0, 0))
                try:
                    if parents:
                        self._copy_with_parents(src_root, matches, rootfd, dest, options)
                    else:
                        self._copy_into(src_root, matches, archives, files, rootfd, dest,
                                        options, as_dir)
                finally:
                    copying.close_links(options)

        self._fs_step(r, key, work, created_by)

    def _copy_into(self, src_root: Path, matches: list[str], archives: set[str],
                   files: list[tuple[str, bytes]], rootfd: int, dest: str,
                   options: copying.CopyOptions, as_dir: bool) -> None:
        srcfd = os.open(src_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            plain = [m for m in matches if m not in archives]
            copying.copy_sources(srcfd, plain, rootfd, dest, options, as_dir=as_dir)
            for rel in sorted(archives):
                self._extract(src_root, rel, rootfd, dest, options)
        finally:
            os.close(srcfd)
        for name, data in files:
            target = dest if not dest.endswith("/") else dest + name
            copying.write_file(rootfd, target, data, options)

    def _copy_with_parents(self, src_root: Path, matches: list[str], rootfd: int, dest: str,
                           options: copying.CopyOptions) -> None:
        """COPY --parents: each source keeps its path below the source root (a dir its
        own name too) under the destination."""
        srcfd = os.open(src_root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            for rel in matches:
                keep = rel if (src_root / rel).is_dir() else posixpath.dirname(rel)
                target = dest.rstrip("/") + "/" + (f"{keep}/" if keep not in ("", ".") else "")
                copying.copy_sources(srcfd, [rel], rootfd, target, options, as_dir=True)
        finally:
            os.close(srcfd)

    def _archives(self, root: Path, matches: list[str]) -> set[str]:
        """The local sources ADD extracts: tars, plain or compressed."""
        from ociimg.build.fetch import is_archive
        return {rel for rel in matches
                if (root / rel).is_file() and not (root / rel).is_symlink()
                and is_archive(root / rel)}

    def _extract(self, src_root: Path, rel: str, rootfd: int, dest: str,
                 options: copying.CopyOptions) -> None:
        """A local archive: unpacked by the layer applier into a private temp dir, then
        copied like a dir (its entries resolved inside the image like any COPY's); the
        archive's owners are kept unless --chown."""
        from ociimg.build.fetch import extract_archive
        from ociimg.oskit.paths import resolve_in_root
        work = Path(tempfile.mkdtemp(dir=self._workdir(), prefix="extract-"))
        try:
            # Opened inside the context root (a parent swapped for a link to the host
            # since the check cannot lead out), then read through that fd.
            srcfd = os.open(src_root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                fd = resolve_in_root(srcfd, rel, flags=os.O_RDONLY)
            except OSError as exc:
                raise BuildError(f"ADD {rel}: {exc.strerror}") from None
            finally:
                os.close(srcfd)
            try:
                extract_archive(Path(f"/proc/self/fd/{fd}"), work, label=rel)
            finally:
                os.close(fd)
            keep = copying.CopyOptions(owner=options.owner if options.owner != (0, 0)
                                       else None, chmod=options.chmod,
                                       parents_owner=options.parents_owner)
            workfd = os.open(work, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                copying.copy_sources(workfd, ["."], rootfd, dest.rstrip("/") + "/", keep,
                                     as_dir=True)
            finally:
                os.close(workfd)
                copying.close_links(keep)
        finally:
            _remove_tree(work)

    def _downloads(self, urls: list[str]) -> tuple[Path, list[str], str]:
        """ADD URL: each downloaded (mode 0600, mtime from Last-Modified) into a temp dir
        named as the URL's last path component; never extracted."""
        from urllib.parse import urlparse

        from ociimg.build.fetch import download
        work = Path(tempfile.mkdtemp(dir=self._workdir(), prefix="download-"))
        names = []
        for i, url in enumerate(urls):
            name = posixpath.basename(urlparse(url).path) or f"download-{i}"
            sub = work / str(i)
            sub.mkdir()
            path, _mtime = download(url, sub / name)
            os.chmod(path, 0o600)
            names.append(f"{i}/{name}")
        digest = Digest.of(b"".join((work / n).read_bytes() for n in names)).hex
        return work, names, digest

    def _context_sources(self, sources: list[str], add: bool
                         ) -> tuple[Path, str, list[str], Callable[[str, bool], bool] | None]:
        context = self._need_context()
        matches: list[str] = []
        for src in sources:
            if add and _is_url(src):
                raise BuildError(f"ADD {src}: URLs and context files in one ADD",
                                 hint="ADD the URLs in an ADD of their own")
            rel = src.lstrip("/")
            if rel in ("", "."):
                found = ["."]
            elif _is_glob(rel):
                found = context.glob(rel.rstrip("/"))
            else:
                context.resolve(rel.rstrip("/"))  # ContextEscape for ../x and links out
                found = context.glob(_glob_escape(rel.rstrip("/")))
                if not found:
                    raise BuildError(f"{src}: not found in the build context (or excluded "
                                     "by .containerignore)")
            matches.extend(found)
        if sources and not matches:
            raise BuildError(f"no source files were specified: {' '.join(sources)} matched "
                             "nothing in the build context")
        for rel in matches:
            context.resolve(rel)
        digest = context.digest(matches) if matches else ""
        return context.root, digest, matches, _excluder(context)

    def _source_root(self, stage: Stage, ref: str) -> tuple[Path, str]:
        """The merged tree of ``--from=ref`` (a stage or an image), read-only; and what
        identifies its content for the cache key."""
        index = from_reference(self.df, stage, ref, "--from")
        if index is not None:
            if index not in self.results:
                raise BuildError(f"--from={ref}: stage {index} has not been built")
            chain = self.results[index].chain
        else:
            image = self._image(ref, self.options.platform)
            chain = image.chain()[-1] if image.config.diff_ids else None
        name = str(chain) if chain else "scratch"
        if name not in self._views:
            if chain is None:
                path = Path(tempfile.mkdtemp(dir=self._workdir(), prefix="scratch-"))
            else:
                key = f"build-view-{secrets.token_hex(8)}"
                self.snapshots.view(key, chain, labels={"ociimg.build": "view"})
                self._stack.callback(self.snapshots.remove, key)
                path = self._stack.enter_context(self.snapshots.mounted(key))
            self._views[name] = path
        return self._views[name], name

    # The step engine ------------------------------------------------------------------------
    @contextlib.contextmanager
    def _mounted(self, key: str) -> Iterator[tuple[Path, int]]:
        with self.snapshots.mounted(key) as view:
            rootfd = os.open(view, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                yield view, rootfd
            finally:
                os.close(rootfd)

    def _fs_step(self, r: _StageResult, parts: dict[str, Any], work: Callable[[str], None],
                 created_by: str) -> None:
        self.steps += 1
        key = step_key(parent=str(r.chain) if r.chain else None,
                       compression=self.options.compression,
                       epoch=self.options.timestamp, platform=r.platform.to_json(), **parts)
        entry = None if self.options.no_cache else self.cache.get(key, self.store,
                                                                  self.snapshots)
        if entry is not None:
            self.cached += 1
            self.progress.done(f"step-{self._step_no}", "cached")
        else:
            entry = self._execute(r, work)
            self.cache.put(key, entry)
        r.chain = entry.chain
        if entry.layer is None:
            r.history.append({"created_by": created_by, "empty_layer": True})
            return
        assert entry.diff_id is not None
        r.layers.append(entry.layer)
        r.diff_ids.append(entry.diff_id)
        r.history.append({"created_by": created_by, "created": entry.created})
        r.created.append(datetime.fromisoformat(entry.created.replace("Z", "+00:00")))
        r.new_layers += 1

    def _execute(self, r: _StageResult, work: Callable[[str], None]) -> CachedStep:
        key = f"build-{secrets.token_hex(8)}"
        self.snapshots.prepare(key, r.chain, labels={"ociimg.build": "step"})
        try:
            work(key)
            created = format_time(self._time())
            if not self.snapshots.changes(key):
                return CachedStep(r.chain, None, None, created)
            written: list[Any] = []

            def store_blob(tar: Any) -> None:  # the same diff the commit applies
                written.append(write_layer(self.store, NewLayer(tar),
                                           self.options.compression))

            chain = self.snapshots.commit(key, source_date_epoch=self.options.timestamp,
                                          on_tar=store_blob)
            return CachedStep(chain, written[0].descriptor, written[0].diff_id, created)
        finally:
            self.snapshots.remove(key)

    def _time(self) -> datetime:
        if self.options.timestamp is not None:
            return datetime.fromtimestamp(self.options.timestamp, UTC)
        return self.now

    # The image ----------------------------------------------------------------------------
    def _write(self, r: _StageResult) -> BuildResult:
        if self.options.squash and r.new_layers > 1:
            self._squash(r)
        config = dict(r.state.config)
        if self.options.labels:
            config["Labels"] = {**(config.get("Labels") or {}), **self.options.labels}
        for key in [k for k, v in config.items() if v in (None, [], {})]:
            if key not in ("Env",):
                config.pop(key)
        created = self._image_time(r)
        history = [h if "created" in h else {**h, "created": format_time(created)}
                   for h in r.history]
        doc: dict[str, Any] = {**r.platform.to_json(), "config": config,
                               "rootfs": {"type": "layers",
                                          "diff_ids": [str(d) for d in r.diff_ids]},
                               "history": history, "created": format_time(created)}
        author = r.state.author or r.author
        if author:
            doc["author"] = author
        base = parse_config(canonical_json(doc), "built config")
        tags = [_normalize_tag(t) for t in self.options.tags]
        desc = write_image(self.store, base_config=base, base_layers=r.layers, new_layers=[],
                           history=[], tag=tags[0] if tags else None, created=created,
                           author=author, compression=self.options.compression,
                           platform=r.platform)
        for tag in tags[1:]:
            self.store.tag(tag, desc)
        manifest = json.loads(self.store.read_blob(desc.digest))
        return BuildResult(desc, Digest.parse(manifest["config"]["digest"]), tuple(tags),
                           self.steps, self.cached)

    def _image_time(self, r: _StageResult) -> datetime:
        if self.options.timestamp is not None:
            return datetime.fromtimestamp(self.options.timestamp, UTC)
        if r.created:
            return max(r.created)
        if r.base_created:
            with contextlib.suppress(ValueError):
                return datetime.fromisoformat(r.base_created.replace("Z", "+00:00"))
        return datetime.fromtimestamp(0, UTC)

    def _squash(self, r: _StageResult) -> None:
        """--squash: the layers the final stage added, as one. They are applied in order
        onto an active snapshot of the stage's base (deletions become the snapshot's
        whiteouts), whose diff is the one layer; their history entries stay, marked
        empty_layer, and one entry for the squashed layer follows them."""
        from ociimg.layers.apply import ApplyOptions, apply_layer
        from ociimg.layers.compression import open_decompressed
        base_count = len(r.layers) - r.new_layers
        base_chain = chain_ids(r.diff_ids[:base_count])[-1] if base_count else None
        key = f"build-squash-{secrets.token_hex(8)}"
        self.snapshots.prepare(key, base_chain, labels={"ociimg.build": "squash"})
        try:
            with self._mounted(key) as (view, _rootfd):
                for desc in r.layers[base_count:]:
                    with self.store.open_blob(desc.digest) as raw:
                        apply_layer(view, open_decompressed(raw, desc.media_type),  # type: ignore[arg-type]
                                    ApplyOptions())
            with tempfile.TemporaryFile(dir=self.snapshots.path) as tar:
                self.snapshots.diff(key, tar, source_date_epoch=self.options.timestamp)  # type: ignore[arg-type]
                tar.seek(0)
                written = write_layer(self.store, NewLayer(tar), self.options.compression)  # type: ignore[arg-type]
        finally:
            self.snapshots.remove(key)
        del r.layers[base_count:]
        del r.diff_ids[base_count:]
        r.layers.append(written.descriptor)
        r.diff_ids.append(written.diff_id)
        for h in r.history[r.base_history:]:
            h["empty_layer"] = True
        r.history.append({"created_by": f"squashed {r.new_layers} layers # ociimg",
                          "created": format_time(max(r.created))})
        r.new_layers = 1



# Helpers ----------------------------------------------------------------------------------
def _mount_ids(fields: Mapping[str, str], default_mode: str, kind: str
               ) -> tuple[int, int, int]:
    """A cache or secret mount's mode (octal), uid and gid, checked: a bad value is the
    Containerfile's error, never a traceback, and -1 (chown's "leave it") is no owner."""
    try:
        mode = int(fields.get("mode", default_mode), 8)
        uid, gid = int(fields.get("uid", "0")), int(fields.get("gid", "0"))
    except ValueError:
        mode = uid = gid = -1
    if not 0 <= mode <= 0o7777 or not 0 <= uid < 2**32 - 1 or not 0 <= gid < 2**32 - 1:
        raise BuildError(f"--mount type={kind}: bad mode, uid or gid in {dict(fields)}",
                         hint="mode is octal (0755), uid and gid are numbers")
    return mode, uid, gid


def _host_network_files(network: str) -> list[BindMount]:
    """With the host's network, its resolver config too (BuildKit does the same), read-only;
    a mount point RUN had to create is removed again, so the image keeps its own."""
    if network != "host":
        return []
    return [BindMount(path, path, readonly=True) for path in ("/etc/resolv.conf", "/etc/hosts")
            if os.path.isfile(path)]


def _apply_excludes(matches: list[str], excluded: Callable[[str, bool], bool] | None,
                    patterns: list[str]) -> tuple[list[str], Callable[[str, bool], bool]]:
    """COPY --exclude: the patterns (.containerignore's rules) drop matches and, in the
    walk below them, entries; on top of the ignore file's exclusions."""
    from ociimg.build.ignore import IgnoreRules
    rules = IgnoreRules.parse("\n".join(patterns), "--exclude")

    def both(rel: str, is_dir: bool) -> bool:
        return rules.excluded(rel, is_dir) or (excluded is not None and excluded(rel, is_dir))

    return [m for m in matches if not rules.excluded(m)], both


def _check_checksum(expected: str | None, root: Path, names: list[str]) -> None:
    """ADD --checksum=sha256:HEX: the one downloaded file must hash to it."""
    if expected is None:
        return
    if len(names) != 1:
        raise BuildError("ADD --checksum takes one URL")
    try:
        want = Digest.parse(expected)
    except OciimgError:
        raise BuildError(f"--checksum={expected}: expected sha256:HEX") from None
    with open(root / names[0], "rb") as f:
        got = Digest.of(f.read(), want.algorithm)
    if got != want:
        raise BuildError(f"ADD: the download hashed to {got}, not {want}",
                         hint="the file changed at its source, or --checksum is wrong")


def _is_url(text: str) -> bool:
    return text.startswith(("http://", "https://"))


def _is_glob(text: str) -> bool:
    return any(c in text for c in "*?[")


def _glob_escape(text: str) -> str:
    return re.sub(r"([*?\[\\])", r"\\\1", text)


def _excluder(context: BuildContext) -> Callable[[str, bool], bool] | None:
    rules = getattr(context, "ignore", None)
    if rules is None:
        return None

    def excluded(rel: str, is_dir: bool) -> bool:
        if not rules.excluded(rel, is_dir):
            return False
        return not (is_dir and rules.may_contain_included(rel))

    return excluded


def _match_in_root(root: Path, patterns: list[str]) -> list[str]:
    """``--from`` sources: glob patterns matched in an image's tree (Go filepath.Match
    per component; nothing followed out of the root)."""
    import fnmatch
    out: list[str] = []
    for pattern in patterns:
        rel = posixpath.normpath("/" + pattern).lstrip("/")
        if not rel:
            out.append(".")
            continue
        if not _is_glob(rel):
            out.append(rel)
            continue
        found = ["."]
        for part in rel.split("/"):
            nxt = []
            for base in found:
                directory = root / base
                if directory.is_symlink() or not directory.is_dir():
                    continue
                for name in sorted(os.listdir(directory)):
                    if fnmatch.fnmatchcase(name, part):
                        nxt.append(name if base == "." else f"{base}/{name}")
            found = nxt
        if not found:
            raise BuildError(f"{pattern}: no match in the --from source")
        out.extend(found)
    return out


def _owner_of(spec_text: str, rootfs: Path) -> tuple[int, int]:
    """``--chown``/USER → uid, gid from the image's passwd/group; a user alone: gid =
    uid (reference.md COPY --chown)."""
    from ociimg.users import resolve_user
    user, sep, group = spec_text.partition(":")
    try:
        resolved = resolve_user(spec_text if sep else user, rootfs)
    except OciimgError as exc:
        raise BuildError(f"--chown={spec_text}: {exc.message}", hint=exc.hint) from None
    uid = resolved.uid
    gid = resolved.gid if sep else (resolved.uid if user.isdigit() else resolved.gid)
    return uid, gid


def _normalize_tag(text: str) -> str:
    from ociimg.reference import parse_reference
    return str(parse_reference(text))


def _tar_filter(member: Any, path: str) -> Any:
    """ADD's extraction: tarfile's data filter, but owners and modes kept (as Docker)."""
    import tarfile
    checked = tarfile.data_filter(member, path)
    return checked.replace(uid=member.uid, gid=member.gid, mode=member.mode,
                           uname=member.uname, gname=member.gname, deep=False)


def _copy_tree(src: Path, dest: Path) -> None:
    import shutil
    if src.is_dir():
        shutil.copytree(src, dest, symlinks=True)
    else:
        shutil.copy2(src, dest)


def _unmount(path: Path) -> None:
    """A private bind of this build, detached; the read-only bind keeps the work dir's
    removal from reaching into it even if this failed."""
    from ociimg.oskit import linux
    with contextlib.suppress(OSError):
        linux.umount2(path, linux.MNT.DETACH)


def _remove_tree(path: Path) -> None:
    from ociimg.fsutil import remove_tree
    with contextlib.suppress(FileNotFoundError):
        remove_tree(path)


def build(root: Path, df: Dockerfile, context: BuildContext | None, options: BuildOptions,
          resolve: ResolveImage, progress: Progress | None = None) -> BuildResult:
    """Build ``df`` (its target stage) into the store under ``root``."""
    return Builder(root, df, context, options, resolve, progress).build()


__all__ = ["BuildOptions", "BuildResult", "Builder", "PROXY_ARGS", "build"]

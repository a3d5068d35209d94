"""The transport grammar and ImageSource over every local transport; save/load round
trips in both archive formats; the images listing and the template formatter."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import zstandard

from ociimg import spec
from ociimg.cli.template import render, render_table
from ociimg.commands.listing import (
    ImageRow,
    created_since,
    filter_rows,
    human_size,
    image_rows,
    split_name,
    uncompressed_size,
)
from ociimg.digest import Digest
from ociimg.errors import DigestMismatch, InvalidArgument, InvalidReference
from ociimg.reference import LayoutReference, parse_image_name
from ociimg.registry.dockerarchive import DockerArchive
from ociimg.store import Store
from ociimg.transports import load_archive, open_local_source, parse_transport, save_images
from tests.storeimage import make_image


@pytest.mark.parametrize("text, kind, path, tag", [
    ("oci:/l", "oci", "/l", None),
    ("oci:/l:docker.io/library/busybox:1", "oci", "/l", "docker.io/library/busybox:1"),
    ("oci-archive:/a.tar:x", "oci-archive", "/a.tar", "x"),
    ("docker-archive:/a.tar", "docker-archive", "/a.tar", None),
    ("docker-archive:/a.tar:busybox:latest", "docker-archive", "/a.tar", "busybox:latest"),
    ("dir:/d", "dir", "/d", None),
    ("dir:/d:with:colons", "dir", "/d:with:colons", None),  # skopeo: all of it is the path
])
def test_grammar(text: str, kind: str, path: str, tag: str | None) -> None:
    ref = parse_image_name(text)
    assert ref == LayoutReference(kind, Path(path), tag)  # type: ignore[arg-type]


def test_unsupported_transport_names_the_supported_ones() -> None:
    with pytest.raises(InvalidReference) as err:
        parse_image_name("containers-storage:x")
    assert "docker-archive:FILE" in (err.value.hint or "") and "dir:PATH" in err.value.hint


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = Store(tmp_path / "root" / "store")
    s.init()
    make_image(s, {"etc/hello": b"hi\n"}, name="docker.io/library/hello:1")
    make_image(s, {"bin/tool": b"x" * 5000}, name="example.com/tools/tool:2")
    return s


def _config_digests(source) -> Digest:  # type: ignore[no-untyped-def]
    _d, manifest = source.manifest()
    return manifest.config.digest


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_then_read_and_load_every_transport(store: Store, tmp_path: Path, fmt: str) -> None:
    images = [(store, store.resolve(n), (n,)) for n, _ in store.refs()]
    archive = tmp_path / "out.tar"
    save_images(archive, images, fmt)
    name = "docker.io/library/hello:1"
    with parse_transport(f"{fmt}:{archive}:{name}") as source:
        with parse_transport(name, tmp_path / "root") as original:
            assert source.config().diff_ids == original.config().diff_ids
            assert _config_digests(source) == _config_digests(original)
            _d, manifest = source.manifest()
            with source.open_blob(manifest.layers[0].digest) as f:
                assert b"hi\n" in f.read()
    other = Store(tmp_path / "other")
    loaded = load_archive(archive, other)
    assert sorted(n for n, _ in loaded) == sorted(n for n, _ in store.refs())
    _d, _m, config = other.image_for(name)
    assert config.diff_ids == store.image_for(name)[2].diff_ids


def test_docker_archive_to_stream_matches_file(store: Store, tmp_path: Path) -> None:
    images = [(store, store.resolve("docker.io/library/hello:1"), ("docker.io/library/hello:1",))]
    save_images(tmp_path / "a.tar", images, "docker-archive")
    buf = io.BytesIO()
    save_images(None, images, "docker-archive", out=_Unseekable(buf))
    assert buf.getvalue() == (tmp_path / "a.tar").read_bytes()


class _Unseekable(io.RawIOBase):
    def __init__(self, inner: io.BytesIO) -> None:
        self.inner = inner

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:  # type: ignore[no-untyped-def]
        return self.inner.write(data)


def test_dir_transport_round_trip_and_corruption(store: Store, tmp_path: Path) -> None:
    from ociimg.reference import LayoutReference as L
    from ociimg.registry import copy

    d = tmp_path / "d"
    copy(L("oci", store.path, "docker.io/library/hello:1"), L("dir", d))
    assert (d / "version").read_text() == "Directory Transport Version: 1.1\n"
    with parse_transport(f"dir:{d}") as source:
        _desc, manifest = source.manifest()
        layer = manifest.layers[0].digest
        assert (d / layer.hex).is_file()
        (d / layer.hex).write_bytes(b"tampered")
        with pytest.raises(DigestMismatch), source.open_blob(layer) as f:
            f.read()


def test_layout_without_a_name_lists_its_names(store: Store) -> None:
    with pytest.raises(InvalidReference) as err:
        open_local_source(LayoutReference("oci", store.path))
    assert "docker.io/library/hello:1" in err.value.message
    assert "example.com/tools/tool:2" in err.value.message


def test_docker_archive_without_name_needs_one_of_several(store: Store, tmp_path: Path) -> None:
    images = [(store, store.resolve(n), (n,)) for n, _ in store.refs()]
    save_images(tmp_path / "a.tar", images, "docker-archive")
    with pytest.raises(InvalidReference, match="example.com/tools/tool:2"):
        parse_transport(f"docker-archive:{tmp_path / 'a.tar'}")
    archive = DockerArchive(tmp_path / "a.tar")
    # by image ID (docker's), and by a short name that normalises to a RepoTag
    config = archive.images[0].config.digest
    assert archive.resolve(str(config)) == archive.images[0].descriptor
    assert archive.resolve("hello:1").digest in {i.descriptor.digest for i in archive.images}


def test_docker_archive_digest_is_stable(store: Store, tmp_path: Path) -> None:
    images = [(store, store.resolve("docker.io/library/hello:1"), ("docker.io/library/hello:1",))]
    save_images(tmp_path / "a.tar", images, "docker-archive")
    first = DockerArchive(tmp_path / "a.tar").images[0].descriptor.digest
    assert DockerArchive(tmp_path / "a.tar").images[0].descriptor.digest == first


# images listing and templates --------------------------------------------------------
def test_uncompressed_sizes_from_blob_metadata(tmp_path: Path) -> None:
    s = Store(tmp_path / "s")
    data = b"abc" * 100000
    for media_type, blob in ((spec.OCI_LAYER_GZIP, gzip.compress(data)),
                             (spec.OCI_LAYER_ZSTD, zstandard.compress(data)),
                             (spec.OCI_LAYER, data)):
        d = s.put_blob(blob)
        assert uncompressed_size(s, spec.Descriptor(media_type, d, len(blob))) == len(data)


def test_rows_filters_and_unnamed_images(store: Store) -> None:
    desc = make_image(store, {"x": b"y"})
    store.tag(str(desc.digest), desc)
    rows = image_rows(store)
    unnamed = [r for r in rows if r.dangling]
    assert [(r.repository, r.tag) for r in unnamed] == [("<none>", "<none>")]
    assert [r.name for r in filter_rows(rows, ["dangling=false"], store)] == \
        ["docker.io/library/hello:1", "example.com/tools/tool:2"]
    assert [r.name for r in filter_rows(rows, ["reference=hello*"], store)] == \
        ["docker.io/library/hello:1"]
    assert [r.name for r in filter_rows(rows, ["reference=example.com/*:2"], store)] == \
        ["example.com/tools/tool:2"]
    with pytest.raises(InvalidArgument):
        filter_rows(rows, ["colour=red"], store)


def test_label_filters_must_all_hold(store: Store) -> None:
    def row(name: str, labels: dict[str, str]) -> ImageRow:
        return ImageRow(name, name, "1", None, spec.OCI_MANIFEST, None, None, 0, labels)

    rows = [row("a", {"x": "1", "y": "2"}), row("b", {"x": "1"}), row("c", {"y": "2"})]
    assert [r.name for r in filter_rows(rows, ["label=x", "label=y=2"], store)] == ["a"]
    assert [r.name for r in filter_rows(rows, ["label=x=1"], store)] == ["a", "b"]


def test_names_split_and_units() -> None:
    assert split_name("localhost:5000/a/b:t") == ("localhost:5000/a/b", "t")
    assert split_name("localhost:5000/a/b") == ("localhost:5000/a/b", "<none>")
    assert split_name("sha256:" + "a" * 64) == ("<none>", "<none>")
    assert human_size(2140160) == "2.14MB" and human_size(999) == "999B"
    now = datetime(2026, 1, 10, tzinfo=UTC)
    assert created_since(now - timedelta(days=3), now) == "3 days ago"
    assert created_since(now - timedelta(minutes=90), now) == "About an hour ago"


def test_template_fields_functions_and_table() -> None:
    row = {"Repository": "a/b", "Tag": "1", "Labels": {"k": "v"}, "List": ["x", "y"]}
    assert render("{{.Repository}}:{{.Tag}}", row) == "a/b:1"
    assert render('{{json .Labels}} {{index .Labels "k"}} {{join .List ","}}', row) == \
        '{"k":"v"} v x,y'
    assert render("{{upper .Repository}}\\t{{.Labels}}", row) == "A/B\tmap[k:v]"
    rows = [row, {**row, "Repository": "long/name"}]
    lines = render_table("table {{.Repository}}\\t{{.Tag}}", rows, {"Repository": "REPOSITORY"})
    assert lines == ["REPOSITORY   TAG", "a/b          1", "long/name    1"]
    for bad in ("{{.Nope}}", "{{exec .Tag}}", "{{}}", '{{.Tag "unterminated}}'):
        with pytest.raises(InvalidArgument):
            render(bad, row)


def test_saved_docker_archive_has_the_documented_layout(store: Store, tmp_path: Path) -> None:
    """docker load / podman load read manifest.json with Config and Layers member names;
    each layer's name and content are its diff ID (as skopeo writes)."""
    name = "docker.io/library/hello:1"
    save_images(tmp_path / "a.tar", [(store, store.resolve(name), (name,))], "docker-archive")
    with tarfile.open(tmp_path / "a.tar") as tar:
        manifest = json.load(tar.extractfile("manifest.json"))  # type: ignore[arg-type]
        [entry] = manifest
        assert entry["RepoTags"] == [name]
        config = tar.extractfile(entry["Config"]).read()  # type: ignore[union-attr]
        assert entry["Config"] == f"{Digest.of(config).hex}.json"
        layer = tar.extractfile(entry["Layers"][0]).read()  # type: ignore[union-attr]
        assert entry["Layers"][0] == f"{Digest.of(layer).hex}.tar"
        assert json.loads(config)["rootfs"]["diff_ids"] == [str(Digest.of(layer))]


@pytest.mark.parametrize("fmt", ["docker-archive", "oci-archive"])
def test_save_of_an_index_pulled_for_one_platform(tmp_path: Path, fmt: str) -> None:
    from tests.storeimage import make_index

    s = Store(tmp_path / "s")
    here = make_image(s, {"a": b"amd64"}, arch="amd64")
    absent = make_image(s, {"a": b"arm64"}, arch="arm64", put=False)
    index = make_index(s, [here, absent], name="example.com/multi:1")
    save_images(tmp_path / "a.tar", [(s, index, ("example.com/multi:1",))], fmt,
                spec.Platform("linux", "amd64"))
    other = Store(tmp_path / "other")
    [(name, desc)] = load_archive(tmp_path / "a.tar", other)
    assert name == "example.com/multi:1"
    assert other.image_for(name)[2].diff_ids == s.image_for("example.com/multi:1")[2].diff_ids


def test_images_output_escapes_what_the_image_controls(tmp_path: Path) -> None:
    from tests.clirun import ociimg
    from tests.storeimage import make_image

    make_image(Store(tmp_path / "root" / "store"), {"a": b"b"}, name="evil:1",
               config={"Labels": {"x": "\x1b[2Jred\u202e"}})
    out = ociimg(tmp_path / "root", "images", "--format", "{{.Labels}} {{index .Labels \"x\"}}")
    assert out.returncode == 0, out.stderr
    assert out.stdout == "map[x:\\x1b[2Jred\\u202e] \\x1b[2Jred\\u202e\n"

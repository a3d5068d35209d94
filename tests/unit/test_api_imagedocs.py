"""The Engine API's image documents, shaped without a server: docker's familiar names,
the list summary by API version, history rows, the progress text."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ociimg.api.imagedocs import (
    group_rows,
    image_history,
    image_summary,
    progress_bar,
)
from ociimg.commands.listing import ImageRow
from ociimg.digest import Digest
from ociimg.reference import familiar_name

D1 = Digest.parse("sha256:" + "1" * 64)
CONFIG = Digest.parse("sha256:" + "c" * 64)


@pytest.mark.parametrize(("stored", "shown"), [
    ("docker.io/library/busybox:latest", "busybox:latest"),
    ("docker.io/library/busybox", "busybox"),
    (f"docker.io/library/busybox@{D1}", f"busybox@{D1}"),
    ("docker.io/someone/tool:2", "someone/tool:2"),
    ("docker.io/library/a/b:1", "library/a/b:1"),  # library/ only for one component
    ("127.0.0.1:5000/library/x:1", "127.0.0.1:5000/library/x:1"),
    ("quay.io/docker.io/x:1", "quay.io/docker.io/x:1"),
])
def test_familiar_names(stored: str, shown: str) -> None:
    assert familiar_name(stored) == shown


def row(name: str, repository: str, tag: str, image_id: Digest | None = CONFIG) -> ImageRow:
    return ImageRow(name, repository, tag, D1, "application/vnd.oci.image.manifest.v1+json",
                    image_id, datetime(2024, 1, 2, tzinfo=UTC), 1234, {"a": "b"})


def test_rows_group_by_image_id_and_summary_by_version() -> None:
    rows = [row("docker.io/library/busybox:latest", "docker.io/library/busybox", "latest"),
            row("127.0.0.1:5000/x:1", "127.0.0.1:5000/x", "1"),
            row(str(D1), "<none>", "<none>"),
            row("docker.io/library/artifact:1", "docker.io/library/artifact", "1", None)]
    groups = group_rows(rows)
    assert list(groups) == [str(CONFIG)]  # the artifact is no docker image
    group = groups[str(CONFIG)]
    doc = image_summary(group, (1, 41))
    assert doc["RepoTags"] == ["busybox:latest", "127.0.0.1:5000/x:1"]
    assert doc["RepoDigests"] == [f"busybox@{D1}", f"127.0.0.1:5000/x@{D1}"]
    assert (doc["Id"], doc["ParentId"], doc["SharedSize"], doc["Containers"]) == \
        (str(CONFIG), "", -1, -1)
    assert doc["Created"] == 1704153600 and doc["VirtualSize"] == doc["Size"] == 1234
    assert "VirtualSize" not in image_summary(group, (1, 43))


def test_history_newest_first_with_missing_ids() -> None:
    group = group_rows([row("docker.io/library/busybox:latest", "docker.io/library/busybox",
                            "latest")])[str(CONFIG)]
    rows = [{"created": "2024-01-02T00:00:00Z", "createdBy": "CMD [\"sh\"]", "size": 0,
             "uncompressedSize": 0, "comment": ""},
            {"created": "", "createdBy": "ADD x /", "size": 10, "uncompressedSize": None,
             "comment": "c"}]
    out = image_history(group, rows)
    assert out[0] == {"Id": str(CONFIG), "Created": 1704153600, "CreatedBy": "CMD [\"sh\"]",
                      "Tags": ["busybox:latest"], "Size": 0, "Comment": ""}
    assert out[1] == {"Id": "<missing>", "Created": 0, "CreatedBy": "ADD x /", "Tags": None,
                      "Size": 10, "Comment": "c"}


def test_progress_bar_text() -> None:
    half = progress_bar(500_000, 1_000_000)
    assert half.startswith("[" + "=" * 25 + ">" + " " * 24 + "]")
    assert half.endswith("500kB/1MB")
    assert progress_bar(1_000_000, 1_000_000).startswith("[" + "=" * 50 + "]")
    assert progress_bar(42, None).strip() == "42B"

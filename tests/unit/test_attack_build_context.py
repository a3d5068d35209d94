"""The build context's files read by the builder itself (the Containerfile, the ignore
file) when a writer of the context swaps a parent dir for a link to a host dir between
the check and the open: the open stays inside the context (the text read shows up in
parse errors, so a host file's first words could leak into a CI log)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from ociimg.build.context import BuildContext
from ociimg.build.ignore import IgnoreRules
from ociimg.errors import ContextNotFound


def test_read_file_does_not_follow_a_parent_swapped_after_the_check(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ctx, host = tmp_path / "ctx", tmp_path / "host"
    (ctx / "sub").mkdir(parents=True)
    (ctx / "sub" / "Containerfile").write_text("FROM ctx\n")
    host.mkdir()
    (host / "Containerfile").write_text("SECRET host file\n")
    context = BuildContext.from_dir(ctx, IgnoreRules([]))
    assert context.read_file("sub/Containerfile") == b"FROM ctx\n"
    checked = BuildContext._follow

    def follow_then_swap(self: BuildContext, relpath: str) -> str:
        rel = checked(self, relpath)
        os.rename(ctx / "sub", ctx / "sub.real")  # the race, at its worst moment
        (ctx / "sub").symlink_to(host)
        return rel

    monkeypatch.setattr(BuildContext, "_follow", follow_then_swap)
    with pytest.raises(ContextNotFound):
        context.read_file("sub/Containerfile")

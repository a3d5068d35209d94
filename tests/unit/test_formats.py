"""The applier's two on-disk formats answer the same questions: every method of the
ApplyFormat interface exists on both, with the same parameters, so the applier never
needs to know which one it holds."""

from __future__ import annotations

import ast
import inspect

import pytest

from ociimg.layers import apply
from ociimg.layers.formats import ApplyFormat, DirFormat
from ociimg.layers.upperdir import OverlayFormat

METHODS = [name for name, value in vars(ApplyFormat).items()
           if inspect.isfunction(value) and not name.startswith("_")]


def test_the_interface_is_not_empty() -> None:
    assert {"entry_path", "whiteout", "link_target_dir", "finish"} <= set(METHODS)


@pytest.mark.parametrize("cls", [DirFormat, OverlayFormat])
@pytest.mark.parametrize("name", METHODS)
def test_each_format_implements_the_interface(cls: type, name: str) -> None:
    method = getattr(cls, name, None)
    assert callable(method), f"{cls.__name__} lacks {name}"
    want = list(inspect.signature(getattr(ApplyFormat, name)).parameters)
    assert list(inspect.signature(method).parameters) == want


def test_the_applier_does_not_branch_on_the_format() -> None:
    tree = ast.parse(inspect.getsource(apply))
    used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
    assert not used & {"overlay", "OVERLAY"}  # OnDiskFormat.DIR: the options default

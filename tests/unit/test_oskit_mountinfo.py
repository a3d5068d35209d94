"""oskit.mountinfo: escapes, optional fields, the ' - ' separator, and hostile text (bad
escapes, huge or truncated lines, non-UTF-8 paths) never raise."""

from __future__ import annotations

import os

import pytest

from ociimg.oskit.mountinfo import (
    containing_mount,
    escape,
    parse_line,
    parse_mountinfo,
    read_mountinfo,
    unescape,
)

SAMPLE = (
    "22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/sda1 rw\n"
    "30 22 0:25 / /tmp rw shared:5 master:2 - tmpfs tmpfs rw,size=1k\n"
    "31 30 0:26 /sub /tmp/a\\040b\\012c\\134d\\011e rw - tmpfs my\\040src rw\n"
    "32 30 0:27 / /tmp/a\\040b\\012c\\134d\\011e rw unbindable - tmpfs t rw\n"
    "33 22 0:28 / /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n"
)


def test_fields_optional_tags_and_escapes() -> None:
    mounts = parse_mountinfo(SAMPLE)
    assert [m.mount_id for m in mounts] == [22, 30, 31, 32, 33]
    root, tmp, odd, odd2, cg = mounts
    assert (root.parent_id, root.dev, root.root, root.mount_point) == (1, "0:21", "/", "/")
    assert root.optional == ("shared:1",) and root.shared
    assert tmp.optional == ("shared:5", "master:2")
    assert (tmp.fstype, tmp.source, tmp.super_options) == ("tmpfs", "tmpfs", "rw,size=1k")
    assert odd.mount_point == "/tmp/a b\nc\\d\te" and odd.root == "/sub"
    assert odd.optional == () and not odd.shared and odd.source == "my src"
    assert odd2.optional == ("unbindable",)
    assert cg.fstype == "cgroup2" and cg.super_options == "rw,nsdelegate"


def test_containing_mount_uses_unescaped_points_and_the_top_of_a_stack() -> None:
    mounts = parse_mountinfo(SAMPLE)
    assert containing_mount(mounts, "/tmp/a b\nc\\d\te/rootfs").mount_id == 32
    assert containing_mount(mounts, "/tmp/a b\nc\\d\te").mount_id == 32
    assert containing_mount(mounts, "/tmp/a").mount_id == 30  # a prefix, not a parent
    assert containing_mount(mounts, "/tmpx").mount_id == 22
    assert containing_mount([], "/x") is None


@pytest.mark.parametrize(("field", "expected"), [
    ("plain", "plain"),
    ("a\\040b", "a b"),
    ("\\134\\134", "\\\\"),
    ("trailing\\", "trailing\\"),
    ("short\\04", "short\\04"),
    ("nonoct\\089", "nonoct\\089"),
    ("big\\777", "big\\777"),     # above 0o377: no byte, kept as written
    ("\\\\040", "\\ "),          # a backslash, then an escaped space
    ("hi\\377", "hi\udcff"),      # a non-UTF-8 byte, as os.fsdecode spells it
])
def test_unescape_table(field: str, expected: str) -> None:
    assert unescape(field) == expected


def test_escape_round_trips() -> None:
    for path in ("/a b", "/x\ny", "/back\\slash", "/t\tab", "/plain"):
        assert unescape(escape(path)) == path
        assert " " not in escape(path) and "\n" not in escape(path)


@pytest.mark.parametrize("line", [
    "",
    "garbage",
    "1 2 3 4 5 6 7",                         # no separator
    "1 2 0:1 / /x rw - ext4",                # separator without source
    "x 2 0:1 / /x rw - ext4 src rw",         # non-numeric id
    "1 2 0:1 / - ext4 src rw",               # separator too early (no options field)
    "\x00\x00 - - - -",
])
def test_malformed_lines_are_skipped(line: str) -> None:
    assert parse_line(line) is None
    assert parse_mountinfo(line + "\n" + SAMPLE)[0].mount_id == 22


def test_huge_and_hostile_text_is_linear_and_safe() -> None:
    long_point = "/" + "\\040" * 200_000 + "\\"
    line = f"40 22 0:30 / {long_point} rw - tmpfs t rw\n"
    (m,) = parse_mountinfo(line)
    assert m.mount_point == "/" + " " * 200_000 + "\\"
    many = "".join(f"{i} 1 0:1 / /m{i} rw - tmpfs t rw\n" for i in range(2, 20_000))
    assert len(parse_mountinfo(many)) == 19_998


def test_a_separator_inside_a_path_is_escaped_so_never_splits() -> None:
    # a mount point named " - ext4 x y" is printed as \040-\040ext4...
    m = parse_line("41 22 0:31 / /a\\040-\\040ext4\\040x\\040y rw - tmpfs real rw")
    assert m is not None and m.mount_point == "/a - ext4 x y" and m.fstype == "tmpfs"


def test_reading_this_process_table() -> None:
    mounts = read_mountinfo()
    assert mounts and containing_mount(mounts, os.getcwd()) is not None
    assert read_mountinfo(os.getpid())[0].mount_id == mounts[0].mount_id

"""/proc/<pid>/mountinfo, parsed once for every stage (proc(5), "mountinfo").

A line is ``id parent major:minor root mount-point options [optional...] - fstype
source super-options``. The kernel escapes space, tab, newline and backslash in the
path fields as ``\\ooo`` octal; a path with a space is otherwise split in two and
matched against the wrong mount (runc's mountinfo package unescapes the same way).
The text is hostile: any process in the namespace can mount on a path it chose, so a
malformed line or escape is skipped or kept literally, never an exception.
"""

from __future__ import annotations

import os


class Mount:
    """One mountinfo line. Paths are unescaped; non-UTF-8 bytes are surrogate-escaped
    (os.fsdecode) so they round-trip to the kernel."""

    __slots__ = ("mount_id", "parent_id", "dev", "root", "mount_point", "options",
                 "optional", "fstype", "source", "super_options")

    def __init__(self, mount_id: int, parent_id: int, dev: str, root: str,
                 mount_point: str, options: str, optional: tuple[str, ...], fstype: str,
                 source: str, super_options: str) -> None:
        self.mount_id = mount_id
        self.parent_id = parent_id
        self.dev = dev  # "major:minor", as os.major/os.minor of st_dev print it
        self.root = root
        self.mount_point = mount_point
        self.options = options
        self.optional = optional  # "shared:N", "master:N", "propagate_from:N", "unbindable"
        self.fstype = fstype
        self.source = source
        self.super_options = super_options

    @property
    def shared(self) -> bool:
        return any(tag.startswith("shared:") for tag in self.optional)

    def __repr__(self) -> str:
        return f"Mount({self.mount_id}, {self.mount_point!r}, {self.fstype!r})"


def unescape(field: str) -> str:
    """Undo the kernel's ``\\ooo`` escapes; anything else (a lone or trailing
    backslash, non-octal digits, a value above 0o377) stays as written."""
    if "\\" not in field:
        return field
    out: list[str] = []
    i, n = 0, len(field)
    while i < n:
        c = field[i]
        if c == "\\" and _is_octal(field[i + 1:i + 4]):
            value = int(field[i + 1:i + 4], 8)
            out.append(chr(value) if value < 0x80 else chr(0xDC00 + value))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def escape(path: str) -> str:
    """A path as mountinfo prints it."""
    return "".join(f"\\{ord(c):03o}" if c in " \t\n\\" else c for c in path)


def _is_octal(text: str) -> bool:
    return len(text) == 3 and all("0" <= c <= "7" for c in text) and text[0] <= "3"


def parse_line(line: str) -> Mount | None:
    """One line → Mount; None for a line that is not well formed."""
    fields = line.rstrip("\n").split(" ")
    try:
        sep = fields.index("-", 6)
    except ValueError:
        return None
    if len(fields) < sep + 3 or not fields[0].isdigit() or not fields[1].isdigit():
        return None
    return Mount(int(fields[0]), int(fields[1]), fields[2], unescape(fields[3]),
                 unescape(fields[4]), fields[5], tuple(fields[6:sep]), unescape(fields[sep + 1]),
                 unescape(fields[sep + 2]), " ".join(fields[sep + 3:]))


def parse_mountinfo(text: str) -> list[Mount]:
    """Every well-formed line of mountinfo ``text``, in order (a later mount on the same
    point is on top of an earlier one)."""
    return [m for line in text.split("\n") if line and (m := parse_line(line)) is not None]


def read_mountinfo(pid: int | str = "self") -> list[Mount]:
    """This (or ``pid``'s) mount namespace's table. Read as bytes and decoded like a
    file name: a mount point that is not UTF-8 must not make the read fail."""
    with open(f"/proc/{pid}/mountinfo", "rb") as f:
        return parse_mountinfo(os.fsdecode(f.read()))


def containing_mount(mounts: list[Mount], path: str) -> Mount | None:
    """The mount ``path`` (absolute, normalised) lies on: the longest mount point that
    is ``path`` or a parent of it, the topmost of those stacked there."""
    best: Mount | None = None
    for m in mounts:
        mp = m.mount_point
        if path == mp or path.startswith(mp.rstrip("/") + "/"):
            if best is None or len(mp) >= len(best.mount_point):
                best = m
    return best

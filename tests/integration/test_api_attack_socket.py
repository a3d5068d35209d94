"""The unix socket's path in a directory others can write to: whoever swaps the freshly
bound socket for a symlink must not get a root-owned file chmod'ed or chown'ed for them."""

from __future__ import annotations

import grp
import os
import socket
import stat
from pathlib import Path

import pytest

from ociimg.api import server
from ociimg.errors import InvalidArgument

pytestmark = pytest.mark.integration


def test_socket_swapped_for_a_symlink_after_bind(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    shared.chmod(0o777)  # world-writable without the sticky bit: anyone may rename in it
    victim = tmp_path / "victim"
    victim.write_text("root's file\n")
    victim.chmod(0o600)
    os.chown(victim, 0, 0)
    path = shared / "docker.sock"
    real_bind = socket.socket.bind

    def bind_then_swap(self: socket.socket, address: object) -> None:
        real_bind(self, address)
        if self.family == socket.AF_UNIX and address == str(path):
            # The other user's move, right after the socket appears.
            os.rename(path, shared / "moved.sock")
            os.symlink(victim, path)

    monkeypatch.setattr(socket.socket, "bind", bind_then_swap)
    sock = None
    try:
        sock = server._listen_unix(path, "nogroup")
    except InvalidArgument:
        pass  # refusing is as good as serving: what matters is the victim below
    finally:
        if sock is not None:
            sock.close()
    st = victim.stat()
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o600, 0, 0)
    assert victim.read_text() == "root's file\n"


def test_socket_of_a_group_in_a_shared_dir(tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    sock = server._listen_unix(shared / "docker.sock", "nogroup")
    try:
        st = (shared / "docker.sock").lstat()
        assert stat.S_ISSOCK(st.st_mode)
        nogroup = grp.getgrnam("nogroup").gr_gid
        assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o660, 0, nogroup)
    finally:
        sock.close()

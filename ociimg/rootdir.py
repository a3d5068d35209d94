"""Where ociimg keeps everything, and keeping it private.

Apart from the store (whose ``layout`` module re-exports these) so that the CLI's global
options can settle the root without importing the store: `ociimg --version`, `ps` and
`images` have a start-up budget (tests/integration/test_cli_startup.py).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path


def default_root() -> Path:
    """$OCIIMG_ROOT > /var/lib/ociimg (root) > $XDG_DATA_HOME/ociimg."""
    env = os.environ.get("OCIIMG_ROOT")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/ociimg")
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.expanduser("~/.local/share")
    return Path(xdg) / "ociimg"


def make_private(root: Path) -> None:
    """Create the ociimg root directory mode 0700, or tighten an existing one: images
    pulled with credentials, container rootfs and logs live below it, and blobs are 0444,
    so only the root directory keeps other users out (containers/storage makes its root
    0700 too). Tools run by root (skopeo, umoci) still read the layout."""
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = root.stat()
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(root, stat.S_IMODE(st.st_mode) & 0o700)

"""Fuzzing the layer applier's tar header parsing (issue 8 item 19).

Hostile layers must end in one line for the user: an OciimgError (InvalidDocument,
UnsafeArchive) or success, never another exception and its traceback. Seeded, bounded
mutations of a small corpus (PAX, GNU long names, global headers, sparse maps,
xattrs, links, devices): random byte flips in header blocks, truncation, huge and
malformed numeric fields, PAX records with bad lengths or NUL bytes. Each mutant is
applied in both on-disk formats, rootless, into a fresh dir.
"""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from ociimg.errors import InvalidDocument
from ociimg.layers.apply import ApplyOptions, apply_layer
from tests.tarbuild import tar
from tests.tarfuzz import pax_file, run_fuzz


def test_mutated_headers_fail_cleanly_or_apply(tmp_path: Path) -> None:
    run_fuzz(tmp_path, rootless=True)


@pytest.mark.parametrize("records", [
    {"path": "a\0b"}, {"linkpath": "t\0x"}, {"SCHILY.xattr.user.a\0b": "v"},
    {"SCHILY.xattr.": "v"},
])
def test_nul_bytes_in_pax_names_are_one_line_errors(tmp_path: Path, records: dict) -> None:
    info, data = pax_file("f", b"x", **records)
    if "linkpath" in records:
        info.type, info.size, data = tarfile.SYMTYPE, 0, b""
    with pytest.raises(InvalidDocument, match=r"^tar entry '"):
        apply_layer(tmp_path, io.BytesIO(tar((info, data))), ApplyOptions(rootless=True))

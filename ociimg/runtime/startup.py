"""The runtime's start-up import budget: the rule, why, and the modules it keeps out.

Every ``ociimg-runtime`` command is a new Python process, and its callers start many:
podman/conmon, containerd's shim and CRI-O call ``create``, ``start``, ``state``, ``kill``
and ``delete`` for every container, ``state`` again and again. The interpreter itself
starts in ~10 ms (``python -I -S``, as bin/ociimg-runtime starts it); one stdlib module
such as ``re``, ``json``, ``typing`` or ``logging`` costs another 2-15 ms
(``python -X importtime``), more than the container work of ``start`` or ``kill``.

The rule: what the commands import (``cli.main`` and the runtime modules they load)
never loads a module of :data:`NEVER`, and ``state``, ``start``, ``kill`` and ``delete``
never load one of :data:`NEVER_LIGHT` either. tests/integration/test_runtime_startup.py
runs each command the way bin/ociimg-runtime does and fails on a module that breaks it.

What the runtime does instead, so that the code reads as it does:

- ``TYPE_CHECKING = False`` then ``if TYPE_CHECKING:`` for annotations' imports, not
  ``from typing import TYPE_CHECKING`` (with ``from __future__ import annotations`` the
  annotations are never evaluated); ``collections.abc`` is imported the same way.
- ``_signal`` and ``_socket``, not ``signal`` and ``socket``: those build IntEnum classes
  at import (enum, functools, collections).
- :mod:`ociimg.runtime.jsonio` (the C scanner/encoder) for JSON: ``json`` compiles
  regular expressions at import (``re``, and enum with it).
- :mod:`ociimg.runtime.lazylog` for logging, :mod:`ociimg.runtime.records` for
  dataclasses, a hand-written parser in cli.py for argparse (argparse brings gettext
  and locale), state.py's own atomic writes for ociimg.fsutil (tempfile, shutil).
- Heavier runtime modules (ociimg.oskit's ctypes, process, namespaces, config, seccomp,
  cgroups) are imported inside the functions of ``create``/``run``/``exec`` that need
  them, not at module level of what every command loads.
- Whatever a container init needs is imported before pivot_root anyway (init.py): a
  lazy import there must be one the init surely takes before it leaves the host fs.

A module that is only needed for rare input (a terminal, an error path, ``--log`` with
``logging`` already loaded by a library user) may be imported there, lazily.
"""

from __future__ import annotations

# Loaded by no command (create, start, state, kill, delete, run, exec).
NEVER = frozenset({
    "argparse", "ast", "collections", "contextlib", "copy", "dataclasses", "datetime",
    "dis", "enum", "functools", "gettext", "inspect", "json", "linecache", "locale",
    "logging", "pathlib", "random", "re", "selectors", "shutil", "signal", "socket",
    "string", "subprocess", "tarfile", "tempfile", "textwrap", "threading", "tokenize",
    "traceback", "typing", "uuid", "warnings", "weakref",
})

# Also loaded by none of state, start, kill and delete: the commands a container manager
# repeats most (ctypes comes with ociimg.oskit).
NEVER_LIGHT = NEVER | frozenset({"ctypes"})

LIGHT_COMMANDS = ("state", "start", "kill", "delete")

"""The built-in OCI runtime: executes runtime-spec bundles (knows nothing about images).

Process model (process.py): the runtime forks an intermediate child, which joins the
container's v1 cgroups and sets its rlimits itself while still the host's root; the
parent writes its uid/gid maps when it made a user ns; the intermediate forks the
container init into the new pid ns (and the cgroup2 dir, clone3), then exits — so the
init survives the short-lived CLI (``create`` then ``start`` from another process). The
init (init.py) does runc's steps in runc's order, blocks on ``exec.fifo`` until ``start``,
then execs the program; it never re-execs Python. Library entry points are in
container.py (create/start/state/kill/delete/run/pause/resume/update) and execution.py
(exec_in_container with an ExecRequest); cli.py is the runc-compatible ``ociimg-runtime``.
Every command is a new process: startup.py is the budget of what their start may import.
"""

# The runtime-spec version this runtime implements: its state and hook documents,
# `features` and `--version` say it.
SPEC_VERSION = "1.2.0"
# Where container state lives unless --root (or OCIIMG_RUNTIME_ROOT) says otherwise.
DEFAULT_STATE_ROOT = "/run/ociimg"

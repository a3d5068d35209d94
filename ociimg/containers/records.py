"""Names of the records a container's monitor keeps in the container's directory.

A leaf: `ps` and `inspect` read these records without importing the monitor (its stdio
and attach machinery)."""

MONITOR_RECORD = "monitor.json"
HEALTH_RECORD = "health.json"  # docker's State.Health, written by the health checker
RUN_RECORD = "run.json"  # the current run: startedAt (Unix seconds), restartCount, pid
STOP_MARK = "stopped"  # written by stop/kill: the restart policy does not apply

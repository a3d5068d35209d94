"""The OS kit under every stage: the only ctypes module (linux.py) and the path and
mount-table helpers that layers, runtime and users share. Nothing here imports another
ociimg module, and importing it costs nothing (the runtime's start path uses it)."""

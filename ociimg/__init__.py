"""ociimg: container images from registry to running process."""

__version__ = "0.1.0"

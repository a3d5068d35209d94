"""The built-in OCI runtime: executes runtime-spec bundles (knows nothing about images)."""

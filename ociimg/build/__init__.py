"""``ociimg build``: Containerfile parsing (pure), the build context, ADD helpers, the builder."""

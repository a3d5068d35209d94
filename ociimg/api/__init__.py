"""The Docker Engine API server (``ociimg serve``): endpoints mapped onto the same library
calls the command line makes, with no logic of their own."""

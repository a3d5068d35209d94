"""``python3 -m ociimg.runtime`` = ``ociimg-runtime``."""

import sys

from ociimg.runtime.cli import main

sys.exit(main())

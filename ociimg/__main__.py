import sys

from ociimg.cli import main

sys.exit(main())

"""`python -m benchmarks [--against ray|dask|pool|none] [--quick] ...`"""

import sys

from .cli import main

sys.exit(main())

"""`python -m totesys_etl.bench [--orders N] [--home DIR]`: see `run.py`."""
import sys

from totesys_etl.bench.run import main

sys.exit(main())

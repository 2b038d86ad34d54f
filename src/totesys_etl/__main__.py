"""`python -m totesys_etl` is the same as the `totesys-etl` command."""
import sys

from totesys_etl.cli import main

sys.exit(main())

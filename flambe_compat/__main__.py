"""`python -m flambe_compat`: the `flambe-compat` command line."""

from .cli import main

raise SystemExit(main())

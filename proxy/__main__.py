"""``python -m proxy``: the same as the ``rosetta`` command."""

from .cli import main

raise SystemExit(main())

"""`python -m models ...`: see models.cli."""

from models.cli import main

raise SystemExit(main())

"""``python -m pyngx`` is the ``pyngx`` command."""
from pyngx.cli import main

raise SystemExit(main())

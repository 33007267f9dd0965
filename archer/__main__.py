"""``python -m archer``: the same as the ``archer`` command."""

from archer.cli import main

raise SystemExit(main())

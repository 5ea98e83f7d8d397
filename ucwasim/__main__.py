"""Allows ``python -m ucwasim serve ...``.

Delegates to the command-line interface.
"""

from ucwasim.cli import main

raise SystemExit(main())

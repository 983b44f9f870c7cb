"""The ``quantcrew`` command line (the ``quantcrew`` console script runs :func:`main`).

One module per command group (``run``, ``risk``, ``train``, ``server``, ``runs``,
``backtest``, ``schedule``), the helpers they share in :mod:`quantcrew.cli.common`, and
:mod:`quantcrew.cli.app` assembling them.
"""

from quantcrew.cli.app import app, main

__all__ = ["app", "main"]

"""``python -m hailuo_async.cli``: the same as the ``hailuo`` command."""

from . import main

main()

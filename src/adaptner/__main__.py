"""``python -m adaptner``: the same as the ``adaptner`` command."""

from .cli import main

main()

"""``python -m medrobust.cli``: the ``medrobust`` command."""

from medrobust.cli import main

main()

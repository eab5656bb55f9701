"""``python -m medrobust`` (and ``torchrun ... -m medrobust``): the ``medrobust`` command."""

from medrobust.cli import main

if __name__ == "__main__":
    main()

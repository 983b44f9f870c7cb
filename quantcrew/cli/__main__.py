"""``python -m quantcrew.cli``: the ``quantcrew`` command."""

from quantcrew.cli.app import main

if __name__ == "__main__":
    main()

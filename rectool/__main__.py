"""``python -m rectool ...`` runs the command line (also under ``torchrun -m rectool``)."""

from rectool.cli import main

if __name__ == "__main__":
    main()

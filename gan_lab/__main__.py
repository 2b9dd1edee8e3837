"""`python -m gan_lab ...` is the same as the `gan-lab` command (torchrun needs a module)."""

from gan_lab.cli import main

if __name__ == "__main__":
    main()

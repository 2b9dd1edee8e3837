"""The `gan-lab` command and `python -m gan_lab ...` (torchrun needs a module).

The command's entry point is here, not in gan_lab.app.cli, because importing the CLI imports
torch and Hydra (seconds): a Ctrl-C in that time must end in one line too, not a traceback.
"""

import sys


def main() -> None:
    """Import the CLI and run it; a Ctrl-C at any moment ends in one line and exit code 130."""
    try:
        from gan_lab.app.cli import main as cli_main
        from gan_lab.app.job import report_interrupt
    except KeyboardInterrupt:
        sys.stderr.write("\ngan-lab: interrupted (Ctrl-C) while starting; nothing was written.\n")
        sys.exit(130)
    try:
        cli_main()
    except KeyboardInterrupt:  # e.g. a second Ctrl-C while the first one's exit was under way
        report_interrupt()


if __name__ == "__main__":
    main()

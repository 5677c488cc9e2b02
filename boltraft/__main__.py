"""``python -m boltraft``: the ``boltraft`` command line, for when the console script is not
on PATH."""

from boltraft_cli.main import main

if __name__ == "__main__":
    main(prog_name="boltraft")

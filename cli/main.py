"""The ``boltraft`` console script: the click group ``main``.

Each command family lives in its own module (``serve``, ``up``, ``bench``, ``inspect``,
``kv``, ``cluster``, ``backup``), whose ``register`` adds its commands to ``main`` here.
"""

from __future__ import annotations

import click

from boltraft import __version__


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="boltraft")
def main() -> None:
    """boltraft: a replicated bucket store on LMDB and Raft."""


def _register() -> None:
    import importlib

    for name in ("serve", "up", "bench", "inspect", "kv", "cluster", "backup", "chaos"):
        module = importlib.import_module(f"boltraft_cli.{name}")
        module.register(main)


_register()

if __name__ == "__main__":
    main()

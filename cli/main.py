"""The ``boltraft`` console script: the click group ``main``.

Each command family lives in its own module (``serve``, ``up``, ``bench``, ``inspect``,
``kv``, ``txn``, ``cluster``, ``endpoint``, ``backup``, ``keys``), whose ``register`` adds its
commands to ``main`` here.

``main`` never lets a traceback out: every failure becomes one line
``error: <code>: <message>`` on stderr and the exit status of its kind (cli/output.py): a
BoltraftError its own code, a wrong command line ``usage`` (status 2), a local file that
cannot be used ``file_error``, Ctrl-C ``interrupted`` (130), anything unexpected
``internal`` (set ``BOLTRAFT_TRACEBACK=1`` to see its traceback instead).

Shell completion (click's): ``eval "$(_BOLTRAFT_COMPLETE=bash_source boltraft)"`` in
``~/.bashrc`` (``zsh_source`` for zsh, ``fish_source`` for fish).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any

import click

from boltraft import __version__
from boltraft.errors import BoltraftError, InterruptedByUserError, UsageError

from .output import EXIT_OTHER, error_line, exit_code, file_error, one_line


def _usage_line(exc: click.ClickException) -> str:
    ctx = getattr(exc, "ctx", None)
    where = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
    return error_line(UsageError(one_line(exc.format_message()) + where))


class BoltraftGroup(click.Group):
    """The top-level group: runs a command and turns whatever it raises into the one error
    line and the exit status of its kind."""

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        status = run_guarded(
            lambda: super(BoltraftGroup, self).main(
                args, prog_name, complete_var, standalone_mode=False, **extra
            )
        )
        if standalone_mode:
            sys.exit(status)
        return status


def run_guarded(call: Any) -> int:
    """Runs ``call()`` (a click ``main`` in non-standalone mode) and returns the exit status;
    prints the one error line for any failure."""
    try:
        rv = call()
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.exceptions.Abort:
        click.echo(error_line(InterruptedByUserError("interrupted")), err=True)
        return exit_code("interrupted")
    except click.ClickException as e:
        if isinstance(e, click.FileError):
            click.echo(f"error: file_error: {one_line(e.format_message())}", err=True)
            return exit_code("file_error")
        if isinstance(e, click.UsageError):
            click.echo(_usage_line(e), err=True)
            return exit_code("usage")
        click.echo(f"error: internal: {one_line(e.format_message())}", err=True)
        return EXIT_OTHER
    except KeyboardInterrupt:
        click.echo(error_line(InterruptedByUserError("interrupted")), err=True)
        return exit_code("interrupted")
    except BoltraftError as err:
        click.echo(error_line(err), err=True)
        return exit_code(err.code)
    except SystemExit as e:
        code = e.code
        if code is None or isinstance(code, int):
            return code or 0
        click.echo(one_line(str(code)), err=True)
        return EXIT_OTHER
    except OSError as exc:
        if os.environ.get("BOLTRAFT_TRACEBACK"):
            raise
        failure = file_error(exc)
        click.echo(error_line(failure), err=True)
        return exit_code(failure.code)
    except Exception as exc:  # a bug: still one line (BOLTRAFT_TRACEBACK=1 shows it all)
        if os.environ.get("BOLTRAFT_TRACEBACK"):
            raise
        click.echo(f"error: internal: {type(exc).__name__}: {one_line(str(exc))}", err=True)
        return EXIT_OTHER
    return rv if isinstance(rv, int) and not isinstance(rv, bool) else 0


@click.group(cls=BoltraftGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="boltraft")
def main() -> None:
    """boltraft: a replicated bucket store on LMDB and Raft.

    Every failure prints one line "error: <code>: <message>" and exits 1 (other), 2 (usage),
    3 (not found or condition failed), 4 (unavailable or timeout) or 130 (interrupted)."""


def _register() -> None:
    import importlib

    for name in (
        "serve",
        "up",
        "bench",
        "inspect",
        "kv",
        "watch",
        "txn",
        "cluster",
        "endpoint",
        "backup",
        "chaos",
        "keys",
    ):
        module = importlib.import_module(f"boltraft_cli.{name}")
        module.register(main)


_register()

if __name__ == "__main__":
    main()

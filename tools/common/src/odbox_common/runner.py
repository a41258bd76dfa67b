"""Run a Typer app so that every failure is one line on stderr and a documented exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

import typer

from odbox_common import console
from odbox_common.errors import ExitCode, ToolError


def typer_app(name: str, help: str) -> typer.Typer:
    """A Typer app with the settings every tool shares.

    Plain help: typer's rich help renderer imports rich.markdown and doubles the
    start time of `--help`, the command a user runs most. No shell-completion
    commands, no pretty tracebacks (errors are one line; --debug shows Python's).
    """
    return typer.Typer(
        name=name,
        help=help,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )


def version_option(prog: str, version: str) -> Any:
    """The `--version` option every tool has: prints `PROG VERSION` and exits 0."""

    def show(value: bool) -> None:
        if value:
            sys.stdout.write(f"{prog} {version}\n")
            raise typer.Exit()

    return typer.Option("--version", callback=show, is_eager=True, help="Print the version.")


def debug_requested(argv: list[str], env_var: str) -> bool:
    flag = os.environ.get(env_var, "").strip().lower()
    return "--debug" in argv or flag in ("1", "true", "yes", "on")


def run(
    app: typer.Typer,
    argv: list[str],
    *,
    prog: str,
    debug_env: str,
    interrupted: str = "interrupted",
    known_errors: Callable[[], tuple[type[BaseException], ...]] = tuple,
    describe: Callable[[BaseException], str] = str,
) -> int:
    """Run `app` on `argv`; return the exit code instead of raising.

    `known_errors()` names exceptions from libraries that already carry a clear
    message (say, a database driver's); it is called only when something was
    raised, so a library is not imported just to name its errors. `describe`
    turns one into the line.
    """
    console.set_program(prog)
    debug = debug_requested(argv, debug_env)
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name=prog, standalone_mode=False)
    except typer.Exit as e:
        return e.exit_code
    except typer.TyperException as e:  # click's usage and parameter errors
        code = int(getattr(e, "exit_code", ExitCode.USAGE))
        ctx = getattr(e, "ctx", None)
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None and code == 2 else ""
        console.error(e.format_message() + hint)
        return code
    except (typer.Abort, KeyboardInterrupt):
        console.error(interrupted)
        return int(ExitCode.INTERRUPTED)
    except ToolError as e:
        if debug:
            raise
        console.error(str(e))
        return int(e.exit_code)
    except known_errors() as e:
        if debug:
            raise
        console.error(describe(e))
        return int(ExitCode.FAILED)
    except Exception as e:
        if debug:
            raise
        console.error(f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)")
        return int(ExitCode.FAILED)
    if result == ExitCode.INTERRUPTED:  # typer turns Ctrl-C into this return value
        console.error(interrupted)
    return result if isinstance(result, int) else 0

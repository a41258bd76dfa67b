"""Run a Typer app so that every failure is one line on stderr and a documented exit code."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import typer

from odbox_common import console
from odbox_common.errors import ExitCode, ToolError, UsageError

# typer vendors its own click (typer._click), whose classes are private: Any for its
# commands and parameters.
Command = Any
Parameter = Any


SHELLS = ("bash", "zsh", "fish")


def typer_app(name: str, help: str, *, subcommand: bool = False) -> typer.Typer:
    """A Typer app with the settings every tool shares, and its `completion SHELL` command
    (not on a `subcommand` group such as `odbox-backup tag`: the tool's script completes it).

    Plain help: typer's rich help renderer imports rich.markdown and doubles the
    start time of `--help`, the command a user runs most. Not typer's own
    `--install-completion` options (they edit the user's shell start-up files), but
    a `completion SHELL` command that prints the script, as kubectl's and restic's
    do. No pretty tracebacks (errors are one line; --debug shows Python's).
    """
    app = typer.Typer(
        name=name,
        help=help,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    if not subcommand:
        _add_completion_command(app, name)
    return app


def examples(*pairs: tuple[str, str]) -> str:
    """A command's `--help` epilog of examples, as kubectl's and restic's: each a `# what it
    does` line and the command, kept as written (click's \\b: no re-wrapping)."""
    lines = ["\b", "Examples:"]
    for what, command in pairs:
        lines += [f"  # {what}", f"  {command}"]
    return "\n".join(lines)


def _complete_var(prog: str) -> str:
    """The variable the shell's script sets when it asks for completions (click's name)."""
    return f"_{prog}_COMPLETE".replace("-", "_").upper()


def _add_completion_command(app: typer.Typer, prog: str) -> None:
    @app.command(
        "completion",
        epilog=examples(
            ("bash", f"{prog} completion bash > ~/.local/share/bash-completion/completions/{prog}"),
            ("zsh: into a folder of $fpath", f'{prog} completion zsh > "${{fpath[1]}}/_{prog}"'),
            ("fish", f"{prog} completion fish > ~/.config/fish/completions/{prog}.fish"),
        ),
    )
    def completion(
        shell: Annotated[str, typer.Argument(metavar="SHELL", help="bash, zsh or fish.")],
    ) -> None:
        """Print the shell completion script for bash, zsh or fish."""
        # typer's own scripts (typer.completion uses them, but exports no name for them)
        from typer._completion_shared import get_completion_script

        if shell not in SHELLS:
            raise UsageError(f"no completion for {shell!r}: give one of {', '.join(SHELLS)}")
        script = get_completion_script(
            prog_name=prog, complete_var=_complete_var(prog), shell=shell
        )
        sys.stdout.write(script + "\n")


def version_option(prog: str, version: str) -> Any:
    """The `--version` option every tool has: prints `PROG VERSION` and exits 0."""

    def show(value: bool) -> None:
        if value:
            sys.stdout.write(f"{prog} {version}\n")
            raise typer.Exit()

    return typer.Option("--version", callback=show, is_eager=True, help="Print the version.")


# Variables renamed so that every tool follows one scheme (tools/common/README.md,
# "Environment"): old name, new name, the tools that read it. The old name still works for
# one release, with a warning; it goes in the next.
RENAMED_VARIABLES = (
    ("ODBOX_ODOO_DB", "ODBOX_DB", ("dbinit",)),
    ("DBINIT_DEBUG", "ODBOX_DBINIT_DEBUG", ("dbinit",)),
    ("VAULTGEN_DEBUG", "ODBOX_VAULTGEN_DEBUG", ("vaultgen",)),
    ("EC2_INSTALL_DEBUG", "ODBOX_EC2_INSTALL_DEBUG", ("ec2-install",)),
    ("K8S_MIGRATE_DEBUG", "ODBOX_K8S_MIGRATE_DEBUG", ("k8s-migrate",)),
)


def adopt_renamed_variables(prog: str) -> None:
    """Set each new name from its old one (unless the new one is set), saying so once."""
    for old, new, tools in RENAMED_VARIABLES:
        if prog in tools and old in os.environ:
            os.environ.setdefault(new, os.environ[old])
            console.warn(f"{old} is now called {new}: the old name works until the next "
                         "release; rename it where it is set (a unit's Environment=, a shell "
                         "profile)")  # fmt: skip


def debug_requested(argv: list[str], env_var: str) -> bool:
    flag = os.environ.get(env_var, "").strip().lower()
    return "--debug" in argv or flag in ("1", "true", "yes", "on")


def _takes_value(option: Parameter) -> bool:
    return not (getattr(option, "is_flag", False) or getattr(option, "count", False))


def _options(command: Command, names: set[str] | None = None) -> dict[str, Parameter]:
    """Every spelling (`--repo`, `-r`) of `command`'s options, of those in `names` if given."""
    found = {}
    for param in command.params:
        spellings = [*param.opts, *param.secondary_opts]
        if param.param_type_name == "option" and (names is None or names & set(spellings)):
            found.update(dict.fromkeys(spellings, param))
    return found


def _option_at(argv: list[str], i: int, options: dict[str, Parameter]) -> int:
    """How many words the option at argv[i] takes (itself and its value), 0 if not one of
    `options`."""
    name, equals, _ = argv[i].partition("=")
    option = options.get(name)
    if option is None:
        return 0
    return 2 if _takes_value(option) and not equals else 1


def place_global_options(group: Command, argv: list[str], names: Sequence[str]) -> list[str]:
    """`argv` with each global option where click parses it, so that a global option goes
    before or after the command, as restic's `-r` and kubectl's `-n` do.

    Global: the group's own options (vaultgen's `--vault`) and the commands' options in
    `names` (odbox-backup's `--repo`). One of the group's given after the command moves
    before it, unless the command has its own of that name; one of a command's given
    before it moves after it. Each option keeps its help where it is declared, so
    `TOOL COMMAND --help` stays true. Words after `--` and unknown options stay put (click
    then says what is wrong).
    """
    from typer.core import TyperGroup

    if not isinstance(group, TyperGroup):
        return argv
    end = argv.index("--") if "--" in argv else len(argv)
    own = _options(group)
    commands_global: dict[str, Parameter] = {}
    for each in group.commands.values():
        commands_global.update(_options(each, set(names)))
    kept: list[str] = []
    moved_after: list[str] = []
    i = 0
    while i < end:  # up to the command's name
        if taken := _option_at(argv, i, own):
            kept += argv[i : i + taken]
        elif taken := _option_at(argv, i, commands_global):
            moved_after += argv[i : i + taken]
        elif argv[i].startswith("-"):
            kept.append(argv[i])  # unknown: click says so
            taken = 1
        else:
            break
        i += taken
    if i == end and moved_after:  # `odbox-backup --repo X`: say the command is missing
        return kept + argv[end:]
    command = group.commands.get(argv[i]) if i < end else None
    if command is None:  # no such command: click says so, not that --repo is unknown
        return [*kept, *argv[i:end], *moved_after, *argv[end:]]
    its_own = _options(command)
    group_only = {k: v for k, v in own.items() if k not in its_own}
    moved_before: list[str] = []
    rest: list[str] = []
    j = i + 1
    while j < end:  # after the command's name
        if taken := _option_at(argv, j, group_only):
            moved_before += argv[j : j + taken]
        else:  # the command's own option with its value (which may look like an option)
            taken = max(_option_at(argv, j, its_own), 1)
            rest += argv[j : j + taken]
        j += taken
    return [*kept, *moved_before, argv[i], *moved_after, *rest, *argv[end:]]


def _metavar(option: Parameter) -> str:
    """The placeholder of an option that declares none: `N` for a number, `PATH` for a path,
    else its long name in capitals (`--group-by GROUP_BY`), never typer's `<str>`."""
    kind = getattr(option.type, "name", "")
    if kind in ("integer", "float", "integer range", "float range"):
        return "N"
    if kind == "path":
        return "PATH"
    return str(max(option.opts, key=len)).lstrip("-").replace("-", "_").upper()


def _placeholders_in_one_style(group: Command) -> None:
    """Every option that takes a value shows an UPPERCASE placeholder in `--help`."""
    for command in [group, *getattr(group, "commands", {}).values()]:
        for param in command.params:
            if param.param_type_name == "option" and _takes_value(param) and not param.metavar:
                param.metavar = _metavar(param)


def _say_where_global_options_go(group: Command, names: Sequence[str]) -> None:
    """The group's help says which options go on either side of the command."""
    spelled = [n for n in (*(p.opts[0] for p in group.params), *names) if n != "--version"]
    listed = ", ".join(dict.fromkeys(spelled))
    group.help = f"{group.help}\n\nThese options go before or after the command: {listed}."


def run(
    app: typer.Typer,
    argv: list[str],
    *,
    prog: str,
    debug_env: str,
    interrupted: str = "interrupted",
    known_errors: Callable[[], tuple[type[BaseException], ...]] = tuple,
    describe: Callable[[BaseException], str] = str,
    global_options: Sequence[str] = (),
) -> int:
    """Run `app` on `argv`; return the exit code instead of raising.

    `known_errors()` names exceptions from libraries that already carry a clear
    message (say, a database driver's); it is called only when something was
    raised, so a library is not imported just to name its errors. `describe`
    turns one into the line. `global_options`: the commands' options that may also
    come before the command (the group's own may always come after it).
    """
    console.set_program(prog)
    adopt_renamed_variables(prog)
    debug = debug_requested(argv, debug_env)
    if os.environ.get(_complete_var(prog)):  # the shell asks for completions: typer answers
        from typer._completion_classes import completion_init  # what add_completion=True runs

        completion_init()
    command = typer.main.get_command(app)
    argv = place_global_options(command, argv, global_options)
    _say_where_global_options_go(command, global_options)
    _placeholders_in_one_style(command)
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

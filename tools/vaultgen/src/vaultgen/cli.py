"""The `vaultgen` command line: parses arguments and prints; the work is in the other modules.

Only typer and the standard library are imported at the top, so `--help` is
fast; each command imports what it needs. Over 450 lines on purpose: one function per
command, most of each its options (their help is the user's first documentation) and
its examples, then a few lines handing over to the module that does the work.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from odbox_common import console, runner
from odbox_common.console import count_of
from odbox_common.errors import ExitCode, UsageError
from odbox_common.errors import ToolError as VaultError
from vaultgen import __version__

if TYPE_CHECKING:
    from vaultgen.generate import Plan, Request

app = runner.typer_app(
    "vaultgen",
    (
        "An age-encrypted secrets vault that is safe to commit: passwords and their crypt "
        "hashes, a CA and TLS certificates, an SSH identity.\n\n"
        "Without a command, runs `generate`. Exit codes: 0 ok, 1 failed, 2 usage, "
        "3 check found problems, 4 another run holds the vault."
    ),
)

BATCH_HELP = (
    "Never prompt: every missing password becomes a generated passphrase. "
    "Implied when standard input is not a terminal."
)


IDENTITY_HELP = (
    "Decrypt with this identity instead of the vault's age.key: your own age key or SSH "
    "private key, listed in recipients.txt (passphrase-protected ones are asked for on the "
    "terminal, as age does)."
)
IdentityOption = Annotated[
    Path | None,
    typer.Option("--identity", metavar="FILE", envvar="VAULTGEN_IDENTITY", help=IDENTITY_HELP),
]


@dataclass(frozen=True)
class Settings:
    vault: Path
    identity: Path | None = None


def _settings(ctx: typer.Context) -> Settings:
    settings = ctx.find_root().obj
    assert isinstance(settings, Settings)
    return settings


@app.callback(invoke_without_command=True)
def main_options(
    ctx: typer.Context,
    vault: Annotated[
        Path,
        typer.Option(
            "--vault",
            envvar="VAULTGEN_VAULT",
            metavar="DIR",
            help="The vault folder. Relative paths are taken from the current directory.",
        ),
    ] = Path("vault"),
    batch: Annotated[bool, typer.Option("--batch", help=f"For `generate`: {BATCH_HELP}")] = False,
    identity: IdentityOption = None,
    debug: Annotated[
        bool,
        typer.Option("--debug", envvar="ODBOX_VAULTGEN_DEBUG", help="Show a traceback on errors."),
    ] = False,
    version: Annotated[
        bool,
        runner.version_option("vaultgen", __version__),
    ] = False,
) -> None:
    ctx.obj = Settings(vault=vault, identity=identity)
    if ctx.invoked_subcommand is None:
        generate(ctx, batch=batch, accept_age=None, identity=None)


def _ask_password(name: str) -> str | None:
    import getpass

    first = getpass.getpass(f"Password for {name} (empty: generate a passphrase): ")
    if not first:
        return None
    if getpass.getpass(f"Password for {name}, again: ") != first:
        raise VaultError(f"the two passwords for {name} differ; nothing was changed")
    return first


def _identity(ctx: typer.Context, given: Path | None) -> Path | None:
    """A command's --identity, else the one before the command."""
    return given or _settings(ctx).identity


def _run_generate(ctx: typer.Context, request: Request, identity: Path | None) -> None:
    from vaultgen.generate import generate as run_generate

    root = _settings(ctx).vault
    request.identity_file = _identity(ctx, identity)
    _report(root, run_generate(root, request))


def _short(recipient: str) -> str:
    """age and ed25519 keys in full; an RSA key's 500 characters by their two ends."""
    return recipient if len(recipient) <= 100 else f"{recipient[:40]}…{recipient[-24:]}"


def _say_recipients(recipients: list[str]) -> None:
    """recipients.txt and manifest.json's identity are committed files: a line someone pushed
    there gets every secret on the next run, so a new set is always shown."""
    console.warn(
        f"every .age file is now encrypted to {count_of(len(recipients), 'recipient')}: check that "
        f"each is meant to read every secret: {', '.join(map(_short, recipients))}"
    )


def _report(root: Path, plan: Plan) -> None:
    if plan.recipients_changed:
        _say_recipients(plan.recipients)
    for w in plan.writes:
        if w.existed:
            verb = "updated"
        else:
            verb = "restored" if w.reason.startswith("restored") else "created"
        console.say(f"{verb} {root / w.path}" + (f" ({w.reason})" if w.existed else ""))
    for c in plan.chmods:
        console.say(f"tightened {root / c.path} to {c.mode:04o} ({c.reason})")
    if plan.empty:
        console.say(f"{root} is up to date")


ACCEPT_AGE_HELP = (
    "Accept this .age file although manifest.json does not record it (you wrote it "
    "with age yourself); repeatable. Without it such a file stops the run: it may be forged."
)
AcceptAge = Annotated[
    list[Path] | None, typer.Option("--accept-age", metavar="FILE", help=ACCEPT_AGE_HELP)
]


def _vault_relative(root: Path, files: list[Path] | None) -> tuple[str, ...]:
    """`vault/passwords/x.txt.age` or `passwords/x.txt.age`: the path inside the vault."""
    result = []
    for file in files or []:
        try:
            result.append(file.resolve().relative_to(root.resolve()).as_posix())
        except ValueError:
            result.append(file.as_posix())
    return tuple(result)


@app.command(
    epilog=runner.examples(
        (
            "a new vault, asking each password (the rest are generated)",
            "vaultgen --vault secrets generate",
        ),
        (
            "the same without a prompt, as CI or a script runs it",
            "vaultgen --vault secrets generate --batch",
        ),
        (
            "after editing recipients.txt: every .age re-encrypted to it",
            "vaultgen generate --vault secrets",
        ),
    ),
)
def generate(
    ctx: typer.Context,
    batch: Annotated[bool, typer.Option("--batch", help=BATCH_HELP)] = False,
    accept_age: AcceptAge = None,
    identity: IdentityOption = None,
) -> None:
    """Make exactly what is missing or out of date (the default command).

    On a terminal, asks for each missing password; an empty answer generates a
    passphrase. A second run with nothing changed writes nothing.
    """
    from vaultgen.generate import Request

    interactive = not batch and sys.stdin.isatty()
    accepted = _vault_relative(_settings(ctx).vault, accept_age)
    _run_generate(
        ctx,
        Request(ask_password=_ask_password if interactive else None, accept_age=accepted),
        identity,
    )


@app.command(
    epilog=runner.examples(
        ("type a new password for odoo-admin", "vaultgen --vault secrets password odoo-admin"),
        (
            "from a file, or a pipe",
            "vaultgen --vault secrets password backup-s3 --file ./s3-secret.txt",
        ),
        ("a new generated passphrase", "vaultgen --vault secrets password admin --generate"),
    ),
)
def password(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Password name, e.g. admin or odoo-admin.")
    ],
    stdin: Annotated[
        bool, typer.Option("--stdin", help="Read the password from standard input.")
    ] = False,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file",
            metavar="FILE",
            help="Read the password from this file (one line).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    generate_new: Annotated[
        bool, typer.Option("--generate", help="Replace it with a new generated passphrase.")
    ] = False,
    identity: IdentityOption = None,
) -> None:
    """Set one password, new or existing, and remake its hashes and .age files.

    Without a source option, asks on the terminal (empty: a generated
    passphrase for a new password, no change for an existing one).
    """
    from vaultgen import layout
    from vaultgen.generate import Request
    from vaultgen.verify import check_password, password_from_bytes

    layout.check_name(name)
    if sum([stdin, file is not None, generate_new]) > 1:
        raise UsageError("choose one of --stdin, --file and --generate")
    root = _settings(ctx).vault
    if not (root / layout.IDENTITY).exists() and not (root / layout.MANIFEST).exists():
        raise UsageError(f"no vault at {root}: create it first with `vaultgen generate`")
    exists = any((root / f"passwords/{name}.txt{ext}").exists() for ext in ("", ".age"))
    if stdin:
        secret = password_from_bytes(sys.stdin.buffer.read(), "standard input")
    elif file is not None:
        secret = password_from_bytes(file.read_bytes(), str(file))
    elif not generate_new and sys.stdin.isatty():
        answer = _ask_password(name)
        if answer is None and exists:
            raise VaultError(
                f"empty answer: the password of {name} is unchanged (--generate replaces it "
                "with a new passphrase)"
            )
        secret = answer or ""
    elif not generate_new:
        raise UsageError("standard input is not a terminal: use --stdin, --file or --generate")
    else:
        secret = ""
    if not secret:
        from vaultgen.passphrase import generate_passphrase

        secret = generate_passphrase()
    check_password(secret, f"password for {name}")
    _run_generate(ctx, Request(passwords={name: secret}), identity)


@app.command(
    epilog=runner.examples(
        (
            "in $EDITOR, re-encrypted and re-hashed on save",
            "vaultgen --vault secrets edit odoo-admin",
        ),
    ),
)
def edit(
    ctx: typer.Context,
    name: Annotated[
        str, typer.Argument(metavar="NAME", help="Password name, e.g. admin or backup-s3.")
    ],
    identity: IdentityOption = None,
) -> None:
    """Edit one password in $VISUAL or $EDITOR, then re-encrypt and re-hash it.

    The editor gets a copy in a 0700 folder in memory ($XDG_RUNTIME_DIR or
    /dev/shm, when either is a tmpfs), removed afterwards whatever happens. A new
    NAME starts empty; an unchanged file changes nothing.
    """
    from vaultgen.edit import edit_password

    root = _settings(ctx).vault
    plan = edit_password(root, name, _identity(ctx, identity))
    if plan is None:
        console.say(f"the password of {name} is unchanged")
    else:
        _report(root, plan)


@app.command(
    epilog=runner.examples(
        (
            "a certificate for two names, valid 90 days",
            "vaultgen --vault secrets certs odoo.example.com --san www.example.com --days 90",
        ),
    ),
)
def certs(
    ctx: typer.Context,
    common_names: Annotated[
        list[str],
        typer.Argument(metavar="CN...", help="DNS names (or IPs) to issue certificates for."),
    ],
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san", metavar="NAME", help="Another name each certificate is valid for (repeatable)."
        ),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option(
            "--days",
            min=31,
            max=825,
            help="Validity in days, 31 to 825 (default: as before, else 825). "
            "Renewal comes 30 days before the end.",
        ),
    ] = None,
    identity: IdentityOption = None,
) -> None:
    """Issue (or re-issue) leaf TLS certificates signed by the vault CA.

    A certificate that already has exactly these names is left as it is. Files:
    certs/CN-cert.pem and certs/CN-key.pem. The names are kept in manifest.json,
    so renewals and regenerations keep them.
    """
    from vaultgen import layout
    from vaultgen.generate import LeafRequest, Request

    sans = tuple(layout.check_common_name(s) for s in san or [])
    leaves = {
        layout.cert_stem(cn): LeafRequest(layout.check_common_name(cn), sans, days)
        for cn in common_names
    }
    if layout.CA_STEM in leaves:
        raise UsageError(f"{layout.CA_STEM} is the vault CA's own name")
    _run_generate(ctx, Request(leaves=leaves), identity)


@app.command(
    "import",
    epilog=runner.examples(
        (
            "a certificate and key from elsewhere, as certs/shop.pem",
            "vaultgen --vault secrets import shop-cert.pem shop-key.pem --name shop",
        ),
    ),
)
def import_cert(
    ctx: typer.Context,
    cert: Annotated[
        Path,
        typer.Argument(
            metavar="CERT",
            help="PEM certificate, with its chain if you have it.",
            exists=True,
            dir_okay=False,
        ),
    ],
    key: Annotated[
        Path,
        typer.Argument(
            metavar="KEY", help="Its unencrypted PEM private key.", exists=True, dir_okay=False
        ),
    ],
    name: Annotated[
        str | None,
        typer.Option(
            "--name", metavar="NAME", help="File stem in certs/ (default: the certificate's CN)."
        ),
    ] = None,
    identity: IdentityOption = None,
) -> None:
    """Import a certificate and key issued elsewhere (refuses a key that does not match).

    Only the certificates go into certs/NAME-cert.pem and only the key into
    certs/NAME-key.pem, even from one combined file. Imported certificates are
    never re-signed by the vault CA.
    """
    from vaultgen import layout, pki
    from vaultgen.generate import Request

    cert_pem, key_pem = pki.normalize_import(
        cert.read_bytes(), key.read_bytes(), str(cert), str(key)
    )
    info = pki.cert_info(cert_pem, str(cert))
    if problem := pki.tls_server_problem(info):
        raise VaultError(f"{cert}: {problem}; nothing was imported")
    if name is None:
        if not info.common_name:
            raise UsageError(f"{cert} has no CN: give --name")
        stem = layout.cert_stem(info.common_name)
    else:
        stem = layout.check_name(name, "certificate name")
    if stem == layout.CA_STEM:
        raise UsageError(f"{layout.CA_STEM} is the vault CA's own name")
    if pki.needs_renewal(info):
        console.warn(f"{cert} expires on {info.not_after:%Y-%m-%d}: renew it soon")
    _run_generate(ctx, Request(imports={stem: (cert_pem, key_pem)}), identity)


@app.command(
    epilog=runner.examples(
        ("after adding or removing a teammate in recipients.txt", "vaultgen --vault secrets rekey"),
        (
            "age.key leaked: a new one, every file re-encrypted",
            "vaultgen --vault secrets rekey --new-identity",
        ),
    ),
)
def rekey(
    ctx: typer.Context,
    new_identity: Annotated[
        bool,
        typer.Option(
            "--new-identity",
            help="Replace age.key with a new identity; the old one is kept as "
            "age.key.old-TIME and decrypts none of the current files.",
        ),
    ] = False,
    accept_age: AcceptAge = None,
    identity: IdentityOption = None,
) -> None:
    """Re-encrypt every .age file to age.key and recipients.txt.

    Works in a fresh clone that has only the .age files and age.key (or your own
    --identity). Edit recipients.txt first to add or remove recipients: removing a
    teammate is a rekey, and needs no new shared key.
    """
    from vaultgen.rekey import rekey as do_rekey

    root = _settings(ctx).vault
    result = do_rekey(
        root, new_identity, _vault_relative(root, accept_age), _identity(ctx, identity)
    )
    console.say(f"re-encrypted {len(result.files)} .age files in {root}")
    _say_recipients(result.recipients)
    for path in result.not_managed:
        console.warn(f"{root / path} is not managed by vaultgen: left as it was")
    if result.new_identity:
        console.say(
            f"new identity {result.new_identity} is in {root / 'age.key'}: copy it to every "
            "machine and teammate that decrypts this vault"
        )
        console.say(
            f"the old identity is kept in {root / str(result.old_key_kept_in)} (old commits "
            "need it); delete it once nothing does"
        )


@app.command(
    epilog=runner.examples(
        ("everything a vault should be; exit 3 on problems", "vaultgen --vault secrets check"),
        (
            "as a teammate, with your own key",
            "vaultgen check --vault secrets --identity ~/.ssh/id_ed25519",
        ),
        ("for CI", "vaultgen --vault secrets check --json"),
    ),
)
def check(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
    identity: IdentityOption = None,
) -> None:
    """Audit the vault: decryption, hashes, certificates, keys, modes, what git commits.

    Trusts no cache. Exit 3 when anything is wrong.
    """
    from vaultgen import layout
    from vaultgen.check import check as run_check
    from vaultgen.files import refuse_if_being_written

    root = _settings(ctx).vault
    layout.require_vault(root)
    refuse_if_being_written(root)
    report = run_check(root, _identity(ctx, identity))
    if json_output:
        console.print_json(report.to_json())
    else:
        for note in report.notes:
            console.say(f"note: {note}")
        if report.ok:
            console.say(f"{report.vault}: {count_of(report.checked, 'file')} checked, no problems")
        else:
            count = len(report.problems)
            console.table(
                f"{report.vault}: {count_of(count, 'problem')} "
                f"in {count_of(report.checked, 'file')}",
                ["file", "problem"],
                [[p.path, p.problem] for p in report.problems],
            )
    if not report.ok:
        raise typer.Exit(ExitCode.PROBLEMS)


@app.command(
    epilog=runner.examples(
        ("what generate would make or remake, and why", "vaultgen --vault secrets status"),
    ),
)
def status(
    ctx: typer.Context,
    json_output: Annotated[bool, typer.Option("--json", help="Print the table as JSON.")] = False,
    identity: IdentityOption = None,
) -> None:
    """Show every file of the vault: ok, missing or stale (and why). Changes nothing."""
    from vaultgen import layout
    from vaultgen.files import refuse_if_being_written
    from vaultgen.generate import plan_only

    root = _settings(ctx).vault
    layout.require_vault(root)
    refuse_if_being_written(root)
    statuses = plan_only(root, _identity(ctx, identity)).statuses()
    if json_output:
        console.print_json(
            {
                "schema": 1,
                "vault": str(root),
                "up_to_date": all(s.state == "ok" for s in statuses),
                "files": [{"path": s.path, "state": s.state, "reason": s.reason} for s in statuses],
            }
        )
        return
    console.table(
        str(root), ["file", "state", "why"], [[s.path, s.state, s.reason] for s in statuses]
    )


def _parse_mode(value: str) -> int:
    try:
        mode = int(value, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777:
        raise UsageError(
            f"invalid value for '--mode': {value!r} is not an octal file mode such as 0400"
        )
    return mode


def _check_out_target(out: Path) -> None:
    """--out replaces a regular file or makes a new one; never a folder, device or link."""
    if out.is_symlink():
        raise VaultError(f"{out} is a symbolic link: give --out the real path")
    if out.is_dir():
        raise VaultError(f"{out} is a folder: give --out a file name")
    if out.exists() and not out.is_file():
        raise VaultError(f"{out} is not a regular file (a device?): give --out a file name")
    if not out.parent.is_dir():
        raise VaultError(f"{out.parent} does not exist: create the folder first")


@app.command(
    epilog=runner.examples(
        (
            "one secret to standard output",
            "vaultgen --vault secrets decrypt passwords/odoo-admin.txt.age",
        ),
        (
            "on the box, with its SSH host key, to a file only root reads",
            "vaultgen decrypt secrets/passwords/odoo-admin.txt.age "
            "--identity /etc/ssh/ssh_host_ed25519_key --out /run/secrets/odoo-admin --mode 0400",
        ),
    ),
)
def decrypt(
    ctx: typer.Context,
    file: Annotated[
        Path,
        typer.Argument(
            metavar="FILE", help="A .age file; relative paths are also looked up in the vault."
        ),
    ],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out", metavar="FILE", help="Write here (atomically) instead of standard output."
        ),
    ] = None,
    mode: Annotated[str, typer.Option("--mode", help="File mode for --out, in octal.")] = "0600",
    identity: Annotated[
        Path | None,
        typer.Option(
            "--identity",
            metavar="FILE",
            help="Decrypt with this age identity file or SSH private key (e.g. the host's "
            "/etc/ssh/ssh_host_ed25519_key) instead of the vault's age.key.",
        ),
    ] = None,
) -> None:
    """Decrypt one .age file to standard output, or to --out with a mode (for activation)."""
    from odbox_common import age
    from vaultgen import agecrypt, layout
    from vaultgen.files import write_atomic

    file_mode = _parse_mode(mode)
    if out is not None:
        _check_out_target(out)
    root = _settings(ctx).vault
    source = file if file.exists() or file.is_absolute() else root / file
    try:
        data = source.read_bytes()
    except OSError as e:
        raise VaultError(f"cannot read {file}: {e.strerror}") from e
    identities = agecrypt.load_identity_file(_identity(ctx, identity) or root / layout.IDENTITY)
    plain = age.decrypt(data, identities, str(source))
    if out is None:
        sys.stdout.buffer.write(plain)
        sys.stdout.buffer.flush()
    else:
        write_atomic(out, plain, file_mode)


@app.command(
    epilog=runner.examples(
        (
            "the dependency graph as an SVG",
            "vaultgen --vault secrets graph | dot -Tsvg > vault.svg",
        ),
    ),
)
def graph(ctx: typer.Context) -> None:
    """Print the vault's dependency graph in Graphviz DOT (pipe it to `dot -Tsvg`)."""
    from vaultgen import layout
    from vaultgen.graph import dot

    root = _settings(ctx).vault
    layout.require_vault(root)
    sys.stdout.write(dot(root))


def run(argv: list[str]) -> int:
    """Run the command line; every failure becomes one line on stderr and an exit code."""
    return runner.run(
        app,
        argv,
        prog="vaultgen",
        debug_env="ODBOX_VAULTGEN_DEBUG",
        interrupted="interrupted; every file is either as it was or complete",
    )


def main() -> NoReturn:
    sys.exit(run(sys.argv[1:]))

"""`vaultgen` commands that make or change the vault: generate, password, edit, certs,
import, rekey.

Each command imports the module that does its work, so `--help` stays fast.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from odbox_common import console, runner
from odbox_common.errors import ToolError as VaultError
from odbox_common.errors import UsageError
from vaultgen.cli_options import (
    BATCH_HELP,
    AcceptAge,
    IdentityOption,
    Json,
    _ask_password,
    _identity,
    _report,
    _run_generate,
    _say_recipients,
    _settings,
    _vault_relative,
    app,
)


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
    json_output: Json = False,
) -> None:
    """Make exactly what is missing or out of date (the default command).

    On a terminal, asks for each missing password; an empty answer generates a
    passphrase. A second run with nothing changed writes nothing.
    """
    from vaultgen.plans import Request

    interactive = not batch and sys.stdin.isatty()
    accepted = _vault_relative(_settings(ctx).vault, accept_age)
    _run_generate(
        ctx,
        Request(ask_password=_ask_password if interactive else None, accept_age=accepted),
        identity,
        json_output,
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
    json_output: Json = False,
) -> None:
    """Set one password, new or existing, and remake its hashes and .age files.

    Without a source option, asks on the terminal (empty: a generated
    passphrase for a new password, no change for an existing one).
    """
    from vaultgen import layout
    from vaultgen.plans import Request
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
    _run_generate(ctx, Request(passwords={name: secret}), identity, json_output)


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
    json_output: Json = False,
) -> None:
    """Edit one password in $VISUAL or $EDITOR, then re-encrypt and re-hash it.

    The editor gets a copy in a 0700 folder in memory ($XDG_RUNTIME_DIR or
    /dev/shm, when either is a tmpfs), removed afterwards whatever happens. A new
    NAME starts empty; an unchanged file changes nothing.
    """
    from vaultgen.edit import edit_password

    root = _settings(ctx).vault
    plan = edit_password(root, name, _identity(ctx, identity))
    if plan is not None:
        _report(root, plan, json_output)
        return
    console.say(f"the password of {name} is unchanged", sys.stderr if json_output else None)
    if json_output:
        console.print_json({"schema": 1, "vault": str(root), "changed": False, "files": [],
                            "recipients": None, "recipients_changed": False})  # fmt: skip


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
    json_output: Json = False,
) -> None:
    """Issue (or re-issue) leaf TLS certificates signed by the vault CA.

    A certificate that already has exactly these names is left as it is. Files:
    certs/CN-cert.pem and certs/CN-key.pem. The names are kept in manifest.json,
    so renewals and regenerations keep them.
    """
    from vaultgen import layout
    from vaultgen.plans import LeafRequest, Request

    sans = tuple(layout.check_common_name(s) for s in san or [])
    leaves = {
        layout.cert_stem(cn): LeafRequest(layout.check_common_name(cn), sans, days)
        for cn in common_names
    }
    if layout.CA_STEM in leaves:
        raise UsageError(f"{layout.CA_STEM} is the vault CA's own name")
    _run_generate(ctx, Request(leaves=leaves), identity, json_output)


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
    json_output: Json = False,
) -> None:
    """Import a certificate and key issued elsewhere (refuses a key that does not match).

    Only the certificates go into certs/NAME-cert.pem and only the key into
    certs/NAME-key.pem, even from one combined file. Imported certificates are
    never re-signed by the vault CA.
    """
    from vaultgen import layout, pki
    from vaultgen.plans import Request

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
    _run_generate(ctx, Request(imports={stem: (cert_pem, key_pem)}), identity, json_output)


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
    json_output: Json = False,
) -> None:
    """Re-encrypt every .age file to age.key and recipients.txt.

    Works in a fresh clone that has only the .age files and age.key (or your own
    --identity). Edit recipients.txt first to add or remove recipients: removing a
    teammate is a rekey, and needs no new shared key.
    """
    from vaultgen.rekey import rekey as do_rekey

    root = _settings(ctx).vault
    ctx.with_resource(console.json_output(json_output))  # the lines below on stderr
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
    if json_output:
        console.print_json({
            "schema": 1, "vault": str(root), "changed": bool(result.files),
            "files": [{"path": f, "action": "re-encrypted", "reason": None} for f in result.files],
            "recipients": result.recipients, "recipients_changed": True,
            "not_managed": result.not_managed, "new_identity": result.new_identity,
            "old_identity_kept_in": result.old_key_kept_in,
        })  # fmt: skip

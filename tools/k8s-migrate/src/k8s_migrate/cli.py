"""The `k8s-migrate` command line: parses arguments and prints; the work is in pull.py.

Only typer and the standard library are imported at the top, so `--help` is
fast; the kubernetes client and odbox-backup load in the commands that use them.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from k8s_migrate import __version__
from odbox_common import console, runner
from odbox_common.errors import ExitCode, ToolError, UsageError

if TYPE_CHECKING:
    from k8s_migrate.preflight import Target

app = runner.typer_app(
    "k8s-migrate",
    (
        "Pull an Odoo database and filestore out of Kubernetes into an odbox-backup snapshot "
        "(--repo) or an Odoo zip (--odoo-zip): Odoo is scaled to 0, pg_dump runs in the "
        "database pod (--db-host: in the helper pod), a helper pod tars the filestore from the "
        "PVC; both stream, verified, "
        "and the cluster is put back whatever fails.\n\n"
        "Exit codes: 0 ok, 1 failed while running, 2 usage (to fix on the command line or "
        "in your files: a wrong name, an output that is a folder or not writable, a "
        "repository not initialised), 4 another pull of the deployment or zip, or another "
        "run holding the repository's lock, is under way, 130 interrupted (Ctrl-C, SIGTERM, "
        "SIGHUP)."
    ),
)

Namespace = Annotated[
    str | None,
    typer.Option("--namespace", "-n", metavar="NS",
                 help="The namespace of Odoo (default: the kubeconfig context's namespace, "
                 "else default, as kubectl picks it)."),
]  # fmt: skip
Deployment = Annotated[
    str, typer.Option("--odoo-deployment", metavar="NAME", help="Odoo's deployment.")
]
DbPod = Annotated[
    str | None,
    typer.Option("--db-pod", metavar="POD",
                 help="The PostgreSQL pod (or --db-host for a server with no pod)."),
]  # fmt: skip
DbHost = Annotated[
    str | None,
    typer.Option("--db-host", metavar="HOST",
                 help="A PostgreSQL server with no pod (RDS, Cloud SQL): pg_dump runs in the "
                 "helper pod against it (--helper-image needs pg_dump of the server's major "
                 "version or later; Odoo's image has one)."),
]  # fmt: skip
DbPort = Annotated[
    int, typer.Option("--db-port", min=1, max=65535, metavar="PORT", help="--db-host's port.")
]
DbContainer = Annotated[
    str | None,
    typer.Option("--db-container", metavar="NAME",
                 help="Its container (default: the one its kubectl.kubernetes.io/"
                 "default-container annotation names, else the first)."),
]  # fmt: skip
DbName = Annotated[str, typer.Option("--db-name", metavar="DB", help="Odoo's database.")]
DbUser = Annotated[
    str | None,
    typer.Option("--db-user", metavar="ROLE",
                 help="Role for pg_dump (default: the pod's default, e.g. postgres)."),
]  # fmt: skip
DbPasswordSecret = Annotated[
    str | None,
    typer.Option("--db-password-secret", metavar="NAME/KEY",
                 help="A Secret's key with --db-user's password (read through the API, given "
                 "to psql and pg_dump as PGPASSWORD on their stdin, never in a command line)."),
]  # fmt: skip
Pvc = Annotated[
    str, typer.Option("--pvc", metavar="CLAIM", help="The PVC with Odoo's data (filestore).")
]
FilestorePath = Annotated[
    str | None,
    typer.Option("--filestore-path", metavar="PATH",
                 help="The filestore's folder inside the PVC (default: filestore/DB), or "
                 "its absolute path in the Odoo pod (under the PVC's mount path)."),
]  # fmt: skip
HelperImage = Annotated[
    str | None,
    typer.Option("--helper-image", metavar="IMAGE",
                 help="Image of the helper pod; it needs sh, find, du and tar "
                 "(default: Odoo's own image, already on the nodes)."),
]  # fmt: skip
Repo = Annotated[
    str | None,
    typer.Option("--repo", "-r", envvar="ODBOX_BACKUP_REPO", metavar="REPO",
                 help="Write a snapshot into this odbox-backup repository (folder or s3://…)."),
]  # fmt: skip
AuthKeyFile = Annotated[
    Path | None,
    typer.Option("--auth-key-file", envvar="ODBOX_BACKUP_AUTH_KEY_FILE", metavar="FILE",
                 help="The --repo repository's authentication key (odbox-backup init "
                 "writes it)."),
]  # fmt: skip


def _use_auth_key(path: Path | None) -> None:
    """odbox-backup's Repository.open reads the key ODBOX_BACKUP_AUTH_KEY_FILE names: the
    option is handed on that way."""
    if path is not None:
        os.environ["ODBOX_BACKUP_AUTH_KEY_FILE"] = str(path)


OdooZip = Annotated[
    Path | None,
    typer.Option("--odoo-zip", metavar="OUT", help="Write an Odoo zip (dump.sql, filestore/)."),
]
Context = Annotated[
    str | None,
    typer.Option("--context", metavar="NAME", help="kubeconfig context (default: current)."),
]
Kubeconfig = Annotated[
    Path | None,
    typer.Option("--kubeconfig", metavar="FILE",
                 help="kubeconfig file (default: $KUBECONFIG, else ~/.kube/config)."),
]  # fmt: skip
Timeout = Annotated[
    float,
    typer.Option("--timeout", min=1, metavar="SECONDS",
                 help="How long to wait for pods to go and for the helper pod to run."),
]  # fmt: skip
Debug = Annotated[
    bool,
    typer.Option("--debug", envvar="ODBOX_K8S_MIGRATE_DEBUG", help="Show a traceback on errors."),
]


@app.callback()
def main_options(
    debug: Debug = False,
    version: Annotated[bool, runner.version_option("k8s-migrate", __version__)] = False,
) -> None:
    """Options for every command."""


def _target(namespace: str | None, deployment: str, db_pod: str | None,
            db_container: str | None, db_name: str, db_user: str | None, pvc: str,
            filestore_path: str | None, helper_image: str | None, timeout: float,
            db_host: str | None, db_port: int, db_password_secret: str | None,
            auth_key: Path | None) -> Target:  # fmt: skip
    """What `plan` and `pull` act on, from their shared options, checked before the cluster
    is touched; the authentication key's file, if given, is handed on in the environment."""
    from k8s_migrate.database import check_host
    from k8s_migrate.preflight import Target

    if (db_pod is None) == (db_host is None):
        raise UsageError("give one of --db-pod POD and --db-host HOST")
    if db_host is not None:
        check_host(db_host)
        if db_container is not None:
            raise UsageError("--db-container is for --db-pod; with --db-host, pg_dump runs in "
                             "the helper pod (--helper-image)")  # fmt: skip
    target = Target(namespace or "", deployment, db_pod or "", db_name, pvc, db_container,
                    db_user, filestore_path, helper_image, timeout)  # fmt: skip
    target.db_host, target.db_port = db_host, db_port
    target.db_password_secret = db_password_secret
    _use_auth_key(auth_key)
    target.filestore  # noqa: B018 (checks --filestore-path now, before anything is touched)
    return target


@app.command()
def plan(
    db_name: DbName,
    pvc: Pvc,
    db_pod: DbPod = None,
    db_host: DbHost = None,
    db_port: DbPort = 5432,
    namespace: Namespace = None,
    odoo_deployment: Deployment = "odoo",
    db_container: DbContainer = None,
    db_user: DbUser = None,
    db_password_secret: DbPasswordSecret = None,
    filestore_path: FilestorePath = None,
    helper_image: HelperImage = None,
    repo: Repo = None,
    auth_key: AuthKeyFile = None,
    odoo_zip: OdooZip = None,
    scale_back: Annotated[
        bool, typer.Option("--scale-back", help="Plan to scale Odoo back up after the pull.")
    ] = False,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
    timeout: Timeout = 300,
    json: Annotated[bool, typer.Option("--json", help="Print one JSON document.")] = False,
    debug: Debug = False,
) -> None:
    """Show each step of a pull, with the sizes found; change nothing (reads only)."""
    from k8s_migrate.kube import Cluster
    from k8s_migrate.plan import describe_plan
    from k8s_migrate.sinks import Output

    target = _target(namespace, odoo_deployment, db_pod, db_container, db_name, db_user, pvc,
                     filestore_path, helper_image, timeout, db_host, db_port,
                     db_password_secret, auth_key)  # fmt: skip
    with Output.open(repo, odoo_zip, tidy=False) as output:  # checked as a pull checks it
        sink_text, notes = output.describe(), output.notes
    cluster = Cluster.connect(kubeconfig, context)
    target.namespace = target.namespace or cluster.namespace
    steps = [*notes, *describe_plan(cluster, target, sink_text, scale_back)]
    if json:
        # schema 1: a key added keeps it, one renamed or removed makes it 2; `changes` as
        # in `dbinit setup --json` and `ec2-install up --dry-run --json`
        console.print_json({"schema": 1, "context": cluster.context, "server": cluster.server,
                            "dry_run": True, "changes": steps})  # fmt: skip
        return
    console.say(f"plan for context {cluster.context} ({cluster.server}); nothing was changed:")
    for i, step in enumerate(steps, 1):
        sys.stdout.write(f"  {i}. {step}\n")


@app.command()
def pull(
    ctx: typer.Context,
    db_name: DbName,
    pvc: Pvc,
    db_pod: DbPod = None,
    db_host: DbHost = None,
    db_port: DbPort = 5432,
    namespace: Namespace = None,
    odoo_deployment: Deployment = "odoo",
    db_container: DbContainer = None,
    db_user: DbUser = None,
    db_password_secret: DbPasswordSecret = None,
    filestore_path: FilestorePath = None,
    helper_image: HelperImage = None,
    repo: Repo = None,
    auth_key: AuthKeyFile = None,
    odoo_zip: OdooZip = None,
    scale_back: Annotated[
        bool, typer.Option("--scale-back", help="Scale Odoo back up after a successful pull.")
    ] = False,
    context: Context = None,
    kubeconfig: Kubeconfig = None,
    timeout: Timeout = 300,
    wait: Annotated[
        float,
        typer.Option("--wait", min=0, metavar="SECONDS", help="Wait for the repository lock."),
    ] = 0,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Pull even while other pods mount the PVC or use the database, and "
            "write the snapshot even if Odoo came back meanwhile (with a warning).",
        ),
    ] = False,
    json: Annotated[
        bool, typer.Option("--json", help="Print one JSON document (the lines go to stderr).")
    ] = False,
    debug: Debug = False,
) -> None:
    """Scale Odoo to 0, pull its database and filestore, write the snapshot or zip."""
    from k8s_migrate.kube import Cluster
    from k8s_migrate.preflight import resolve_filestore
    from k8s_migrate.pull import pull as do_pull
    from k8s_migrate.sinks import Output
    from odbox_common.progress import progress_for

    ctx.with_resource(console.json_output(json))  # progress on stderr, the document on stdout
    target = _target(namespace, odoo_deployment, db_pod, db_container, db_name, db_user, pvc,
                     filestore_path, helper_image, timeout, db_host, db_port,
                     db_password_secret, auth_key)  # fmt: skip
    target.force = force
    with Output.open(repo, odoo_zip) as output:  # before the cluster is touched
        for note in output.notes:
            console.say(note)
        cluster = Cluster.connect(kubeconfig, context)
        target.namespace = target.namespace or cluster.namespace
        if resolved := resolve_filestore(cluster, target):  # the journal's key needs the path
            console.say(resolved)
        key = f"{cluster.server} {target.namespace} {pvc} {target.filestore}"
        with output.sink(key, wait=wait, warn=console.warn) as sink, progress_for() as progress:
            done = do_pull(cluster, target, sink, progress, scale_back=scale_back, say=console.say)
    console.say(done.summary)
    console.say(
        f"transferred {done.dump_bytes} bytes of dump and {done.tar_bytes} bytes of tar; "
        f"{done.reused_files} of {done.files} files were already in the repository"
        if done.reused_files
        else f"transferred {done.dump_bytes} bytes of dump and {done.tar_bytes} bytes of tar"
    )
    if json:
        console.print_json({
            "schema": 1, "context": cluster.context, "server": cluster.server,
            "namespace": target.namespace, "deployment": odoo_deployment, "dry_run": False,
            "summary": done.summary, "dump_bytes": done.dump_bytes, "tar_bytes": done.tar_bytes,
            "files": done.files, "reused_files": done.reused_files,
            "stored_files": done.stored_files, "cleanup": done.cleanup,
        })  # fmt: skip
    if done.cleanup:
        raise ToolError("the pull worked, but " + "; ".join(done.cleanup))


def run_cli(argv: list[str]) -> int:
    if not argv:
        runner.run(app, ["--help"], prog="k8s-migrate", debug_env="ODBOX_K8S_MIGRATE_DEBUG")
        return int(ExitCode.USAGE)
    return runner.run(
        app, argv, prog="k8s-migrate", debug_env="ODBOX_K8S_MIGRATE_DEBUG",
        global_options=("--namespace", "--context", "--kubeconfig", "--repo"),
        interrupted="interrupted before anything was changed; no snapshot was written",
    )  # fmt: skip


def main() -> NoReturn:
    sys.exit(run_cli(sys.argv[1:]))

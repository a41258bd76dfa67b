# Every routine task of the Odoo Box tools. On a fresh machine run them through
# uv, which brings `just` and everything else from uv.lock:
#     python3 -m pip install uv && python3 -m uv run just <task>

set shell := ["bash", "-euo", "pipefail", "-c"]

# `uv run` sets UV to its own path; the fallback is uv on PATH (e.g. the Nix dev shell).
uv := env("UV", "uv")

# List the tasks.
default:
    @just --list

# Install the workspace into .venv exactly as uv.lock says, byte-compiled (so the tools
# start fast even where PYTHONDONTWRITEBYTECODE is set, as on CI machines).
setup:
    {{uv}} sync --locked --compile-bytecode --quiet

# The demo: a vault in demo/ (a git repository of its own), made twice, committed, checked.
# Then, with an Odoo tree (ODOO_SRC or ~/.cache/odbox/odoo-17.0) and root: a real Odoo run as the
# box runs it (tests/box/demo.py) on 127.0.0.1, backed up, changed, restored, serving the restored
# data. Without one: a throwaway PostgreSQL in a temp folder (its server's user must reach it, so
# not under a private home), set up by dbinit and checked, Odoo-shaped data backed up by
# odbox-backup, changed, restored from the first snapshot, verified; and how to get the real one.
demo: system-packages setup
    #!/usr/bin/env bash
    set -euo pipefail
    vaultgen() { {{uv}} run --locked vaultgen "$@"; }
    dbinit() { {{uv}} run --locked dbinit "$@"; }
    if [ -d demo/postgres ]; then scripts/demo-postgres stop demo/postgres || true; fi  # an old demo's
    rm -rf demo && mkdir demo && git -C demo init -q
    echo "== vaultgen generate: a new vault in demo/vault"
    vaultgen --vault demo/vault generate --batch
    echo "== vaultgen generate again: nothing to do"
    vaultgen --vault demo/vault generate --batch
    git -C demo add -A
    git -C demo -c user.name=demo -c user.email=demo@localhost commit -qm "demo vault"
    echo "== what git committed: encrypted and public files only"
    git -C demo ls-files
    echo "== vaultgen status"
    vaultgen --vault demo/vault status
    echo "== vaultgen check"
    vaultgen --vault demo/vault check
    if real=$({{uv}} run --locked python -m tests.box.demo --check); then
        {{uv}} run --locked python -m tests.box.demo
        exit 0
    fi
    pg=$(mktemp -d "${TMPDIR:-/tmp}/odbox-demo-pg.XXXXXX")
    echo "== a throwaway PostgreSQL in $pg (Unix socket only)"
    trap 'scripts/demo-postgres stop "$pg"; rm -rf "$pg"; echo "== $real"' EXIT
    scripts/demo-postgres start "$pg"
    export PGHOST="$pg" PGPORT=5432 PGUSER=postgres
    dbinit wait --timeout 30
    echo "== dbinit setup: roles, databases, least-privilege grants"
    dbinit setup
    echo "== dbinit setup again: nothing to change"
    dbinit setup
    echo "== dbinit check: the privilege matrix"
    dbinit check
    odbox_backup() { {{uv}} run --locked odbox-backup "$@"; }
    odoo_data() { PGOPTIONS="-c role=odoo" {{uv}} run --locked python -m tests.odoo_data "$@"; }
    export ODBOX_BACKUP_REPO=demo/backups ODBOX_DB=odoo ODBOX_FILESTORE=demo/filestore/odoo
    export ODBOX_BACKUP_AUTH_KEY_FILE=demo/backup-auth.key  # init writes it; never in the repository
    echo "== Odoo-shaped data in database odoo (made as role odoo) and its filestore"
    odoo_data fill dbname=odoo demo/filestore/odoo
    echo "== odbox-backup: a repository encrypted to demo/backup-key.txt, and a first snapshot"
    age-keygen -o demo/backup-key.txt 2>/dev/null
    odbox_backup init --recipient "$(age-keygen -y demo/backup-key.txt)"
    odbox_backup run
    echo "== Odoo changes things (3 new attachments, partners edited); a second snapshot"
    odoo_data change dbname=odoo demo/filestore/odoo
    odbox_backup run
    echo "== the snapshots"
    odbox_backup list --identity demo/backup-key.txt
    first=$(odbox_backup list --json | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["id"])')
    echo "== restore the first one: new database and folder, verified, then swapped in"
    odbox_backup restore "$first" --identity demo/backup-key.txt --odoo-stop true --odoo-start true
    echo "== the live data now (the fingerprint of the first snapshot's data), and dbinit's view"
    odoo_data summary dbname=odoo demo/filestore/odoo
    dbinit check
    echo "== verify every object of every snapshot"
    odbox_backup verify --read-data --identity demo/backup-key.txt

# Everything CI runs: the Debian packages the tests need, lint, then every test.
test: system-packages setup lint
    {{uv}} run --locked pytest

# Format check, lint and type check of our code.
lint:
    {{uv}} run --locked ruff format --check .
    {{uv}} run --locked ruff check .
    {{uv}} run --locked mypy

# Rewrite our code in the project's format and fix what ruff can.
fmt:
    {{uv}} run --locked ruff format .
    {{uv}} run --locked ruff check --fix .

# The Nix checks CI runs (Debian's nix-bin, no nixpkgs): every .nix parses, every interface.nix
# option has a type, a default or a reason, and a description, and every tool call in nix/ exists.
nix-check: system-packages setup
    {{uv}} run --locked pytest -q tests/nix

# Benchmarks: side-by-side tables (ours against the baseline each issue names).
bench: setup
    {{uv}} run --locked python bench/vaultgen_speed.py
    {{uv}} run --locked python bench/dbinit_speed.py

# odbox-backup against pg_dump+tar|zstd, the seed's pg_dump+rsync and restic (needs restic,
# rsync, zstd and age: it says how to install what is missing). About 1 GB + 1 GB by default and
# half an hour; `just bench-backup --db-mb 100 --filestore-mb 100 --files 2000` for a quick look.
bench-backup *ARGS: setup
    {{uv}} run --locked python bench/backup_speed.py {{ARGS}}

# k8s-migrate pull through the API emulator against a local pg_dump + tar, ~100 MB and ~1 GB
# (several minutes); `just bench-k8s --sizes 20 --runs 1` for a quick look.
bench-k8s *ARGS: setup
    {{uv}} run --locked python bench/k8s_pull.py {{ARGS}}

# Install the Debian packages the tests need, if any is missing (root or sudo).
system-packages:
    scripts/ensure-debian-packages

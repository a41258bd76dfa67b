"""`neutralize`: Odoo's own neutralization of a database (`odoo neutralize`, Odoo 16+) for a
staging copy: outgoing mail servers and crons off, payment providers in test mode, the
"neutralized" banner. Each installed module's data/neutralize.sql, as Odoo runs it."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from odbox_common.errors import ToolError
from odbox_deploy.commands import Odoo


def neutralize(odoo: Odoo, logs: Path) -> Path:
    """Run `odoo neutralize` on odoo.db; the log it wrote. Odoo exits non-zero (and says
    "THE DATABASE IS NOT NEUTRALIZED") when a query fails; then this raises."""
    logs.mkdir(mode=0o700, parents=True, exist_ok=True)
    log = logs / f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S.%fZ}-neutralize-{odoo.db}.log"
    status = odoo.run([], log, subcommand="neutralize")
    if status != 0:
        raise ToolError(f"odoo neutralize of database {odoo.db} failed (exit status {status}): "
                        f"the database is NOT neutralized; log: {log}")  # fmt: skip
    return log

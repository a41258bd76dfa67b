"""Every ```sh example of tools/backup/README.md runs, in order."""

from __future__ import annotations

import os
import re
from pathlib import Path

from tests.backup.helpers import ODBOX_BACKUP, env_for, make_odoo
from tests.helpers import run_sh_examples
from tests.odoo_data import Shape

README = Path(__file__).resolve().parents[2] / "tools/backup/README.md"


def test_every_example_in_the_readme_runs(postgres, tmp_path):
    filestore = tmp_path / "filestore"
    make_odoo(postgres, "odoo_readme", filestore, Shape.small(), seed=11)
    env = env_for(postgres, None)
    env.update(
        PATH=f"{ODBOX_BACKUP.parent}{os.pathsep}{postgres.bindir}{os.pathsep}{env['PATH']}",
        ODOO_DB="odoo_readme", FILESTORE=str(filestore),
    )  # fmt: skip
    work = tmp_path / "work"
    work.mkdir()
    # The key the README's `init` writes; its later examples get it as a box does, from
    # ODBOX_BACKUP_AUTH_KEY_FILE (each example runs in its own shell: the export is gone).
    env["ODBOX_BACKUP_AUTH_KEY_FILE"] = str(work / "backup-auth.key")
    outputs = run_sh_examples(README, work, env, at_least=1)
    runs = re.findall(r"snapshot \d{8}T\d{6}Z-[0-9a-f]{8}: .* new in (\d+) objects?", outputs[0])
    assert len(runs) == 2
    assert int(runs[1]) <= 2  # the second run adds at most the dump's changed header chunk

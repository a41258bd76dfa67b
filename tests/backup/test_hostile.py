"""What someone who can read and write the repository (the bucket, the backup disk) but holds
neither the box nor the admin's keys tries, and what odbox-backup does about it (README,
"Threat model")."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from tests.backup.helpers import backup, backup_ok, env_for
from tests.helpers import one_error_line


def _age_key(folder: Path, name: str = "key.txt") -> tuple[Path, str]:
    key = folder / name
    subprocess.run(["age-keygen", "-o", str(key)], check=True, capture_output=True)
    public = subprocess.run(["age-keygen", "-y", str(key)], check=True, capture_output=True,
                            text=True).stdout.strip()  # fmt: skip
    return key, public


def test_a_recipients_file_of_only_comments_is_refused(postgres, tmp_path):
    env = env_for(postgres, None)
    recipients = tmp_path / "recipients"
    recipients.write_text("# add key\n\n")
    result = backup(env, "init", "--repo", str(tmp_path / "repo"), "-R", str(recipients))
    assert result.returncode == 2
    assert "holds no recipient" in one_error_line(result)
    assert not (tmp_path / "repo").exists()


def test_comments_in_a_recipients_file_are_never_stored_as_recipients(postgres, tmp_path):
    env = env_for(postgres, None)
    _, public = _age_key(tmp_path)
    recipients = tmp_path / "recipients"
    recipients.write_text(f"# the admin's key\n  {public}  \n\n# the end\n")
    out = backup_ok(env, "init", "--repo", str(tmp_path / "repo"), "-R", str(recipients))
    assert "encrypted to 1 recipients" in out
    config = json.loads((tmp_path / "repo" / "config.json").read_text())
    assert config["recipients"] == [public]

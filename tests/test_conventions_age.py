"""One age parser for vaultgen and odbox-backup (odbox_common.age): the same rules, the same
messages, in both tools."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pyrage
import pytest

from odbox_common import age
from tests.backup.helpers import env_for
from tests.helpers import one_error_line, run_tool
from tests.vaultgen.helpers import clean_env as vaultgen_env


def ssh_key(tmp_path: Path) -> tuple[Path, str]:
    """A new ed25519 key by ssh-keygen; its private key file and its public line (commented)."""
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "erin@laptop",
                    "-f", key], check=True)  # fmt: skip
    return key, key.with_suffix(".pub").read_text().strip()


def test_an_ssh_recipients_comment_is_dropped_and_its_key_decrypts(tmp_path):
    key, public = ssh_key(tmp_path)
    assert public.endswith(" erin@laptop")
    recipient = age.parse_recipient(public, "recipients.txt:1")
    assert recipient.canonical == " ".join(public.split()[:2])
    sealed = pyrage.encrypt(b"secret", age.parse_recipients(["# the team", "", public]))
    assert pyrage.decrypt(sealed, age.load_identities(key.read_bytes(), str(key))) == b"secret"


def test_blank_lines_and_comments_are_no_recipients():
    public = age.generate_identity()[1]
    assert age.recipient_lines(["", "  # erin", f"  {public}  ", "#"]) == [public]


@pytest.mark.parametrize("line", ["hello", "age1notakey", "ssh-dss AAAAB3Nza"])
def test_a_line_that_is_no_recipient_is_refused(line):
    with pytest.raises(age.AgeError, match=r"^recipients.txt:3: not a"):
        age.parse_recipient(line, "recipients.txt:3")


def test_a_private_key_where_a_recipient_belongs_is_refused_without_echoing_it():
    secret = age.generate_identity()[0]
    with pytest.raises(age.SecretKeyInRecipients) as refused:
        age.parse_recipients([secret])
    assert "holds a private key" in str(refused.value)
    assert secret[:20] not in str(refused.value)


def test_an_identity_file_of_junk_is_refused():
    with pytest.raises(age.AgeError, match="not an age identity"):
        age.load_identities(b"hello\n", "key.txt")
    with pytest.raises(age.AgeError, match="holds no age identity"):
        age.load_identities(b"# only a comment\n", "key.txt")


def test_both_tools_refuse_a_junk_recipient_with_the_same_words_and_code(tmp_path, postgres):
    said = "not a recipient: expected age1… or an ssh-ed25519/ssh-rsa public key"
    vault = tmp_path / "vault"
    assert run_tool("vaultgen", "--vault", vault, "--batch", env=vaultgen_env()).returncode == 0
    (vault / "recipients.txt").write_text("hello\n")
    in_vaultgen = run_tool("vaultgen", "--vault", vault, "generate", "--batch", env=vaultgen_env())
    in_backup = run_tool("odbox-backup", "init", "--repo", tmp_path / "repo",
                         "--recipient", "hello", env=env_for(postgres, None))  # fmt: skip
    for result in (in_vaultgen, in_backup):
        assert result.returncode == 2 and said in one_error_line(result)


def test_odbox_backup_never_prints_a_private_key_given_as_a_recipient(tmp_path, postgres):
    """`init --recipient AGE-SECRET-KEY-1…` printed its first 24 characters after the prefix."""
    secret = age.generate_identity()[0]
    result = run_tool("odbox-backup", "init", "--repo", tmp_path / "repo", "--recipient", secret,
                      env=env_for(postgres, None))  # fmt: skip
    assert result.returncode == 2 and "holds a private key" in one_error_line(result)
    assert secret[len(age.AGE_SECRET_PREFIX) :][:8] not in result.stderr
    assert not (tmp_path / "repo").exists()


@pytest.mark.parametrize("key", ["public", "secret"])
def test_init_refuses_a_key_given_to_r_out_of_ages_habit(key, tmp_path, postgres):
    """`odbox-backup init -r age1…` (age's -r RECIPIENT) made an unencrypted repository in a
    folder named after the key: -r is the repository, as restic's."""
    secret, public = age.generate_identity()
    given = public if key == "public" else secret
    result = run_tool(
        "odbox-backup", "init", "-r", given, cwd=tmp_path, env=env_for(postgres, None)
    )
    assert result.returncode == 2 and "-r is --repo" in one_error_line(result)
    assert given not in result.stderr and list(tmp_path.iterdir()) == []

"""Snapshot tags: `run --tag NAME`, `tag add/remove ID NAME…`, `list --tag`, `prune --keep-tag`.

A snapshot's tags are its manifest's `tags` field (FORMAT.md, "Tags"): a tag
change reads the manifest, changes the field and writes the manifest again
under the same ID and a new MAC, under the repository's write lock. So tags
are as authenticated and as encrypted as the rest of the manifest, a copy
carries them, and prune reads them from the one file it reads anyway.

Selections are restic's: `--tag a,b` matches a snapshot that has both a and
b; given several times, a snapshot that matches any of them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from odbox_backup.repository import Repository, RepositoryError
from odbox_common.errors import UsageError

TAG = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,63}")
IMPORT = "import"  # the tag of every snapshot `import` makes
K8S_MIGRATE = "k8s-migrate"  # and of every one k8s-migrate makes


def check_tags(names: Iterable[str]) -> list[str]:
    """The tags, each checked (letters, digits, `._:@+-`, up to 64), sorted and once each."""
    tags = set()
    for name in names:
        if not TAG.fullmatch(name):
            raise UsageError(
                f"{name!r} is not a tag: letters, digits and . _ : @ + - (up to 64 characters, "
                "starting with a letter or digit)"
            )
        tags.add(name)
    return sorted(tags)


def parse_selection(texts: Sequence[str]) -> list[list[str]]:
    """`--tag a,b --tag c`: [[a, b], [c]] (restic's tag lists)."""
    return [check_tags(t.split(",")) for t in texts]


def tags_of(manifest: dict[str, Any]) -> list[str]:
    """A manifest's tags (none before this version)."""
    tags = manifest.get("tags", [])
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        raise RepositoryError(f"snapshot {manifest.get('id')} is damaged: its tags are not a list")
    return list(tags)


def matches(tags: Iterable[str], selection: Sequence[Sequence[str]]) -> bool:
    """Whether a snapshot of these tags matches any of the tag lists (all of its tags)."""
    have = set(tags)
    return any(have.issuperset(wanted) for wanted in selection)


def change_tags(
    repo: Repository, snapshot_id: str, add: Sequence[str] = (), remove: Sequence[str] = ()
) -> tuple[list[str], bool]:
    """Add and remove tags of one snapshot (the caller holds the write lock): its tags now,
    and whether its manifest was written again (not when nothing changed)."""
    repo.require_writable()
    if repo.config.encrypted and not repo.identities:
        raise UsageError(
            "a tag lives in the encrypted manifest, which is written again: pass --identity"
        )
    manifest = repo.read_snapshot(snapshot_id)
    before = tags_of(manifest)
    after = sorted((set(before) | set(check_tags(add))) - set(check_tags(remove)))
    if after == before:
        return after, False
    manifest["tags"] = after
    # Same ID, new MAC; atomic (temp and rename, or one PUT). It overwrites: on an
    # append-only offsite only the admin's credentials may, as for prune.
    repo.write_snapshot(manifest, replace=True)
    return after, True

"""`odbox-backup copy ID --to REPO`: one snapshot into another repository (offsite).

Objects are read from the source (each checked against its name), then
encoded for the destination (its own recipients: a box can copy to an
offsite repository encrypted to the company's key only), and only those the
destination lacks are sent. The manifest goes last, under the same ID, so a
copy killed part-way leaves nothing listed, and a second copy sends only what
is still missing. The caller holds the destination's lock. The manifest is
authenticated under the destination's own key, which may differ from the source's.
"""

from __future__ import annotations

from dataclasses import dataclass

from odbox_backup.manifests import file_entries
from odbox_backup.repository import Repository, Unauthenticated
from odbox_backup.store import Exists
from odbox_common.console import count_of
from odbox_common.progress import Progress


@dataclass
class Copied:
    snapshot: str
    already_there: bool
    objects_sent: int
    bytes_sent: int


def copy_snapshot(
    source: Repository, destination: Repository, snapshot_id: str, progress: Progress | None = None
) -> Copied:
    progress = progress or Progress()
    if destination.store.exists(f"snapshots/{snapshot_id}"):
        try:
            destination.check_snapshot(snapshot_id)
            return Copied(snapshot_id, True, 0, 0)
        except Unauthenticated:
            pass  # one planted under its ID: the real one is written over it
    manifest = source.read_snapshot(snapshot_id)
    known = destination.known_objects()
    wanted = sorted({n for n in source.objects_of(manifest) if n not in known},
                    key=source.read_order)  # fmt: skip
    whole_files = {e["objects"][0] for e in file_entries(manifest) if len(e["objects"]) == 1}
    progress.phase(f"copying snapshot {snapshot_id}: {count_of(len(wanted), 'object')} to send")
    sent = 0
    for name in wanted:
        content = source.get_object(name)
        destination.put_object(content, small_file=name in whole_files)
        sent += len(content)
        progress.advance(len(content))
    try:
        destination.write_snapshot({**manifest, "source": "copy"})
    except Exists:  # one planted under its ID, on S3 (create-only): replaced, if it may be
        destination.store.delete(f"snapshots/{snapshot_id}")
        destination.write_snapshot({**manifest, "source": "copy"})
    return Copied(snapshot_id, False, len(wanted), sent)

"""The filestore in the PVC: its listing (size, files, symlinks), and the tar that brings it.

Both run as `sh -c` scripts in a pod that mounts the PVC (the helper pod, or a running
Odoo pod for the checks before anything changes). Symlinks are followed (`find -L`,
`tar -h`) when they stay inside the PVC: a big attachment moved to another folder of the
volume and linked back is a file like any other. Those that leave it (or point to nothing
there) are refused, by name, before any file moves: their files would be missing.
Hardlinks arrive as files too (`--hard-dereference`, where tar has it; GNU tar otherwise
sends a second name as a link member with no content).
"""

from __future__ import annotations

import io
import os
import secrets
import tarfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from k8s_migrate.kube import Cluster, CommandFailed, KubeError, StreamCut, lines
from k8s_migrate.sinks import Sink, plural
from odbox_common.errors import ToolError, UsageError
from odbox_common.progress import Progress

NO_FOLDER = 66  # the exit status of the scripts below when the filestore's folder is missing
# $1 the folder, $2 a line no file name can be, $3 `all` (size and files too) or `links`,
# $4 the heartbeat's period in seconds (0: none), then the PVC's mount paths in this pod.
# Out: `kib N` (du) and the files (with `all`), the marker, each mount path as the kernel
# resolves it, the marker, then three lines a symlink: y if its target exists, its path,
# `=` and its target resolved (readlink -f). Links inside a symlinked folder are not
# listed: their files are followed all the same.
SCAN_SCRIPT = (
    '[ -d "$1" ] || exit 66; cd -- "$1" || exit 1; end=$2; what=$3; every=$4; shift 4; '
    # du fails on a dangling link, yet sums the rest; those links are refused anyway. It is
    # silent for minutes on a big NFS or EFS volume: a heartbeat on stderr meanwhile keeps
    # load balancers (idle ~350 s) and our own idle timeout from taking it for dead.
    'if [ "$what" = all ]; then beat=; if [ "$every" != 0 ]; then '
    # (its sleep must not outlive it holding the pipes: the exec would end only then)
    "(trap 'kill $s 2>/dev/null; exit 0' TERM; "
    'while :; do sleep "$every" >/dev/null 2>&1 & s=$!; wait $s; echo . >&2; done) '
    "</dev/null >/dev/null & beat=$!; fi; "
    'size=$(du -s -k -L . 2>/dev/null | cut -f1); [ -z "$beat" ] || kill $beat 2>/dev/null; '
    'printf "kib %s\\n" "$size"; '
    "find -L . -type f || exit 1; fi; "
    'printf "%s\\n" "$end"; '
    'for r; do (cd -- "$r" && pwd -P) || exit 1; done; '
    'printf "%s\\n" "$end"; '
    "find . -type l | while IFS= read -r l; do "
    '[ -e "$l" ] && e=y || e=n; printf "%s\\n%s\\n=%s\\n" "$e" "$l" "$(readlink -f -- "$l")"; '
    "done"
)
# The file list goes to tar on stdin, ended by a line no file name can be: a v4 exec
# cannot close stdin, so `-T -` alone would wait for ever there. `-h` follows symlinks
# (checked to stay inside the PVC); `--hard-dereference` where this tar knows it.
TAR_SCRIPT = (
    '[ -d "$1" ] || exit 66; cd -- "$1" || exit 1; end=$2; '
    "if tar --hard-dereference -cf /dev/null -T /dev/null 2>/dev/null; "
    "then hard=--hard-dereference; else hard=-h; fi; "
    'while IFS= read -r f; do [ "$f" = "$end" ] && break; printf "%s\\n" "$f"; done '
    '| tar -chf - "$hard" -T -'
)
SHOWN = 5  # symlinks named in the error line
# The scan's heartbeat period, in seconds: under the idle timeouts on the way (a load
# balancer's, often 60 s or 350 s; kubelet's streaming one; our own 300 s).
HEARTBEAT = "K8S_MIGRATE_HEARTBEAT"


def heartbeat() -> str:
    """$K8S_MIGRATE_HEARTBEAT (default 20; 0: none), as the scan script takes it."""
    value = os.environ.get(HEARTBEAT, "").strip() or "20"
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= 3600:
        raise UsageError(f"${HEARTBEAT} is {value!r}: give seconds, 0 to 3600 (0: no heartbeat)")
    return f"{seconds:g}"


class FilestoreError(ToolError):
    """The filestore could not be read or sent whole."""


@dataclass(frozen=True)
class Link:
    path: str  # inside the filestore's folder
    target: str  # resolved in the pod
    exists: bool


@dataclass
class Listing:
    kib: int = 0
    files: list[str] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)
    roots: list[str] = field(default_factory=list)  # the PVC's mount paths, resolved

    def outside(self) -> list[Link]:
        """The symlinks whose target is missing or not inside the PVC."""
        return [link for link in self.links if not link.exists or not self.inside(link.target)]

    def inside(self, path: str) -> bool:
        return any(path == r or path.startswith(r.rstrip("/") + "/") for r in self.roots)


def _name(line: str) -> str:
    return line[2:] if line.startswith("./") else line


def scan(
    cluster: Cluster,
    namespace: str,
    pod: str,
    container: str,
    folder: str,
    roots: Sequence[str],
    *,
    files: bool,
    what: str,
) -> Listing:
    """The listing of `folder` in the pod (with `files`, its size and files too); a missing
    folder is CommandFailed with code NO_FOLDER."""
    end = f"--end-{secrets.token_hex(8)}--"
    script = ["sh", "-c", SCAN_SCRIPT, "sh", folder, end, "all" if files else "links",
              heartbeat(), *roots]  # fmt: skip
    out = cluster.run(namespace, pod, container, script, limit=1 << 30, what=what)
    parts = list(lines(out))
    first = parts.index(end)
    second = parts.index(end, first + 1)
    listing = Listing(roots=parts[first + 1 : second])
    if files and first:
        size = parts[0].removeprefix("kib ").strip()
        listing.kib = int(size) if size.isdigit() else 0
        listing.files = [_name(line) for line in parts[1:first]]
    rest = parts[second + 1 :]
    del parts
    for i in range(0, len(rest) - 2, 3):
        # the target after "=": an empty line would be dropped (readlink -f may print none)
        listing.links.append(Link(_name(rest[i + 1]), rest[i + 2][1:], rest[i] == "y"))
    return listing


# $1 the PVC's mount path, $2 the database, $3 a marker: its top level, then the folders
# named like the database under a `filestore` folder (4 levels down at most).
SUGGEST_SCRIPT = (
    'cd -- "$1" || exit 1; ls -1Ap | head -n 20; printf "%s\\n" "$3"; '
    'find . -maxdepth 4 -type d -path "*/filestore/$2" 2>/dev/null | head -n 5'
)


def suggest(cluster: Cluster, namespace: str, pod: str, container: str, root: str,
            db: str) -> tuple[str, str | None]:  # fmt: skip
    """For the error line of a missing filestore folder: what the PVC holds (` (it holds:
    data/, lost+found/)`), and a folder of this database's name under a `filestore`
    folder (`data/filestore/DB`, Bitnami's), if there is one."""
    end = f"--end-{secrets.token_hex(8)}--"
    out = list(lines(cluster.run(namespace, pod, container,
                                 ["sh", "-c", SUGGEST_SCRIPT, "sh", root, db, end])))  # fmt: skip
    cut = out.index(end) if end in out else len(out)
    holds, found = out[:cut], [_name(line) for line in out[cut + 1 :]]
    said = f" (it holds: {', '.join(holds)})" if holds else " (it is empty)"
    return said, found[0] if found else None


def check_links(listing: Listing, pvc: str, filestore: str) -> None:
    """Refuse, naming them, the symlinks whose files would not come: they leave the PVC."""
    bad = listing.outside()
    if not bad:
        return
    shown = "; ".join(
        f"{link.path} -> {link.target}" + ("" if link.exists else " (missing)")
        for link in bad[:SHOWN]
    )
    more = f" and {len(bad) - SHOWN} more" if len(bad) > SHOWN else ""
    raise UsageError(
        f"{plural(len(bad), 'symlink')} in {filestore}/ point outside PVC {pvc} or to "
        f"nothing, so their files cannot be pulled: {shown}{more}; copy those files into "
        "the PVC (or remove the links), then pull again"
    )


@dataclass
class Sent:
    """What the tar brought."""

    stored: int = 0  # files that arrived
    tar_bytes: int = 0


def transfer(
    cluster: Cluster,
    namespace: str,
    helper: str,
    folder: str,
    wanted: list[str],
    sink: Sink,
    progress: Progress,
    sent: Sent,
    what: str,
) -> None:
    """`tar` of the files `wanted` in the helper pod, each one unpacked from the stream
    straight into the sink (no tarball anywhere); `sent` counts what arrived."""
    end = f"--end-{secrets.token_hex(8)}--"
    stream = cluster.exec(namespace, helper, "helper", ["sh", "-c", TAR_SCRIPT, "sh", folder, end],
                          stdin=True, what=what)  # fmt: skip
    with stream:
        feeder_error: list[BaseException] = []

        def feed() -> None:
            try:
                for start in range(0, len(wanted), 1000):
                    stream.write_stdin(
                        "".join(f"./{n}\n" for n in wanted[start : start + 1000]).encode(
                            errors="surrogateescape"
                        )
                    )
                stream.write_stdin(f"{end}\n".encode())
                stream.close_stdin()
            except BaseException as e:
                feeder_error.append(e)

        feeder = threading.Thread(target=feed, name="tar-names", daemon=True)
        feeder.start()
        remaining = set(wanted)
        note: Callable[[], str] = lambda: sink.resume_note(sent.stored)  # noqa: E731
        buffered = io.BufferedReader(stream, 1 << 20)
        try:
            with tarfile.open(fileobj=buffered, mode="r|") as tar:
                for member in tar:
                    # a stream's TarFile keeps every TarInfo (undocumented `members`)
                    tar.members.clear()  # type: ignore[attr-defined]
                    name = _name(member.name)
                    if member.isdir():
                        continue
                    if not member.isreg():
                        kind = "a hard link to " if member.islnk() else "a link to "
                        raise FilestoreError(
                            f"{what} sent {name} as {kind}{member.linkname}, not as a file "
                            "(this tar cannot send links as files: give --helper-image an "
                            f"image with GNU tar){note()}"
                        )
                    if name not in remaining:
                        raise FilestoreError(f"{what} sent {name!r}, which was not asked for")
                    content = tar.extractfile(member)
                    assert content is not None
                    sink.add_file(name, member.size, Counting(content, progress))
                    remaining.discard(name)
                    sent.stored += 1
        except StreamCut as e:
            raise FilestoreError(f"{e}{note()}") from e
        except tarfile.TarError as e:
            raise FilestoreError(
                f"{what} is damaged or cut short after {stream.received} bytes: {e}{note()}"
            ) from e
        try:
            stream.finish()
        except StreamCut as e:
            raise FilestoreError(f"{e}{note()}") from e
        except CommandFailed as e:
            raise FilestoreError(f"{e}{note()}") from e
        feeder.join(timeout=5)
        if feeder_error and not isinstance(feeder_error[0], KubeError):
            raise feeder_error[0]
        if remaining:
            raise FilestoreError(
                f"{plural(len(remaining), 'file')} of the list did not arrive from {what} "
                f"(e.g. {sorted(remaining)[0]}){note()}"
            )
        sent.tar_bytes = stream.received


class Counting:
    """A reader that advances the progress bar by what is read through it."""

    def __init__(self, stream: Any, progress: Progress) -> None:
        self.stream = stream
        self.progress = progress

    def readinto(self, buffer: Any) -> int:
        n = int(self.stream.readinto(buffer) or 0)
        self.progress.advance(n)
        return n

    def read(self, size: int = -1) -> bytes:
        data = bytes(self.stream.read(size))
        self.progress.advance(len(data))
        return data

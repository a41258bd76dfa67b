"""Load a plain SQL dump (an imported Odoo zip's `dump.sql`) without psql, as the owner role.

A zip from another server is untrusted input. psql runs what such a file says outside SQL:
`\\! cmd` (a shell, as whoever runs psql: root), `\\c db` (another database), `\\copy`,
`\\o file`, `\\i file`. So the dump never reaches psql: this module cuts it into statements
(quotes, comments, dollar quotes and parentheses are followed, as psql's own lexer does)
and sends each one to the server over a connection of the owner role, which holds no
superuser right. A COPY's rows go through the copy protocol. Then:

- a psql meta-command (a backslash outside quotes and COPY rows) is refused, save the
  `\\restrict KEY` / `\\unrestrict KEY` lines pg_dump 15.14+ writes around a dump, which
  only tell psql what to refuse itself;
- a role or database switch (SET/RESET ROLE, SESSION AUTHORIZATION), role, database,
  tablespace, subscription or system statements, LOAD, and COPY to or from anything but
  stdin (`COPY … TO PROGRAM`) are refused;
- GRANT, REVOKE, ALTER DEFAULT PRIVILEGES and ALTER … OWNER TO are skipped, as
  `pg_restore --no-privileges --no-owner` would: a dump that grants to a role this box
  lacks (`GRANT SELECT ON res_partner TO bi_reader`) still restores, everything is owned
  by the owner, and the box's own grants apply (the live database's default privileges,
  copied before the load, and dbinit's at its next run).

A refusal is the first line of defence, not the last: the statements run in a session
that cannot become anyone else, so what slips past the checks (a `set_config('role', …)`,
a `DO` block) still runs only as the owner, in the new database.

Run as `python -m odbox_backup.sqlload` (the restore runs it as a child, as the owner's OS
user when peer authentication needs that): the dump on stdin, the owner's connection in
$ODBOX_SQLLOAD_CONNINFO (any password in PGPASSWORD, never in argv); one line on stderr
and exit status 1 when it fails.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, Any

BLOCK = 1 << 20
MAX_STATEMENT = 256 << 20  # one statement (not COPY rows) held in memory at most


class HostileDump(Exception):
    """The dump holds something a restore must not run."""


@dataclass
class Statement:
    text: bytes
    line: int  # where it starts, 1-based
    copy_in: bool = False


# In normal text: what starts or ends something the lexer must follow.
_SPECIAL = re.compile(rb"""[;'"$()\\]|--|/\*""")
_DOLLAR_TAG = re.compile(rb"\$(?:[A-Za-z_\x80-\xff][A-Za-z_0-9\x80-\xff]*)?\$")
_IDENT_BYTE = re.compile(rb"[A-Za-z_0-9\x80-\xff$]")
_LEADING = re.compile(rb"(?:\s+|--[^\n]*(?:\n|\Z)|/\*.*?\*/)*", re.S)  # use with .match
_RESTRICT = re.compile(rb"\\(?:un)?restrict [A-Za-z0-9]+[ \t\r]*(?:\n|\Z)")
_COPY_END = re.compile(rb"^\\\.\r?(?:\n|\Z)", re.M)

_SKIP = re.compile(
    rb"\A(?:GRANT|REVOKE)\b|\AALTER\s+DEFAULT\s+PRIVILEGES\b|\AALTER\b.*\bOWNER\s+TO\b", re.I | re.S
)
_REFUSE = re.compile(
    rb"\A(?:SET|RESET)\s+(?:(?:SESSION|LOCAL)\s+)*(?:ROLE|SESSION\s+AUTHORIZATION)\b"
    rb"|\A(?:RESET\s+ALL|LOAD|ALTER\s+SYSTEM)\b"
    rb"|\A(?:CREATE|ALTER|DROP)\s+(?:ROLE|USER|GROUP|DATABASE|TABLESPACE|SUBSCRIPTION)\b",
    re.I,
)
_COPY = re.compile(rb"\ACOPY\b", re.I)
_PROGRAM = re.compile(rb"\bPROGRAM\b", re.I)
_COPY_FROM_STDIN = re.compile(rb"\ACOPY\b.*\bFROM\s+STDIN\b", re.I | re.S)


def _leading_end(text: bytes, start: int = 0) -> int:
    """Where the whitespace and comments at `start` end."""
    found = _LEADING.match(text, start)
    return found.end() if found else start


def _head(text: bytes) -> bytes:
    """A statement without the whitespace and comments before it."""
    return text[_leading_end(text) :]


class Lexer:
    """Statements of a plain SQL stream, one at a time, and the rows of each COPY FROM
    stdin; reads the stream in blocks (a dump of gigabytes is never held whole)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self.stream = stream
        self.buf = b""
        self.pos = 0
        self.line = 1
        self.eof = False

    def _more(self) -> bool:
        """Read a block onto the buffer; False at the end of the stream."""
        if self.eof:
            return False
        block = self.stream.read(BLOCK)
        if not block:
            self.eof = True
            return False
        self.buf += block
        return True

    def _advance(self, to: int) -> None:
        self.line += self.buf.count(b"\n", self.pos, to)
        self.pos = to

    def _drop_consumed(self) -> None:
        if self.pos > BLOCK:
            self.buf = self.buf[self.pos :]
            self.pos = 0

    def _find(self, pattern: re.Pattern[bytes], start: int) -> re.Match[bytes] | None:
        while True:
            found = pattern.search(self.buf, start)
            if found and (found.end() < len(self.buf) or self.eof):
                return found
            if not self._more():
                return found
            if len(self.buf) - self.pos > MAX_STATEMENT:
                raise HostileDump(f"the statement at line {self.line} is longer than 256 MiB")

    def statements(self) -> Iterator[Statement]:
        while True:
            self._drop_consumed()
            statement = self._statement()
            if statement is None:
                return
            yield statement

    def _statement(self) -> Statement | None:
        start, line, depth, i = self.pos, self.line, 0, self.pos
        while True:
            found = self._find(_SPECIAL, i)
            if found is None:  # the end: psql too runs a last statement that has no `;`
                rest = self.buf[start:]
                self._advance(len(self.buf))
                if not _head(rest):
                    return None
                return self._classify(Statement(rest, line))
            token, at = found.group(), found.start()
            i = found.end()
            if token == b";" and depth == 0:
                self._advance(i)
                return self._classify(Statement(self.buf[start:i], line))
            if token == b"(":
                depth += 1
            elif token == b")":
                depth = max(0, depth - 1)
            elif token == b"--":
                end = self._find(re.compile(rb"\n"), i)
                i = end.end() if end else len(self.buf)
            elif token == b"/*":
                i = self._block_comment(i)
            elif token == b"'":
                escapes = (
                    at > 0
                    and self.buf[at - 1 : at] in (b"E", b"e")
                    and not (at > 1 and _IDENT_BYTE.match(self.buf, at - 2))
                )
                i = self._quoted(i, b"'", escapes)
            elif token == b'"':
                i = self._quoted(i, b'"', False)
            elif token == b"$":
                i = self._dollar(at)
            elif token == b"\\":
                i = self._backslash(start, at)
                if i < 0:  # a \restrict line: not part of any statement
                    start = self.pos
                    line = self.line
                    i = self.pos

    def _quoted(self, i: int, quote: bytes, escapes: bool) -> int:
        pattern = re.compile(rb"\\.|" + re.escape(quote) if escapes else re.escape(quote), re.S)
        while True:
            found = self._find(pattern, i)
            if found is None:
                raise HostileDump(f"a quote opened after line {self.line} is never closed")
            i = found.end()
            if found.group() != quote:
                continue  # a backslash escape
            if self.buf[i : i + 1] == quote or (i == len(self.buf) and self._more() and
                                                self.buf[i : i + 1] == quote):  # fmt: skip
                i += 1  # doubled: part of the text
                continue
            return i

    def _block_comment(self, i: int) -> int:
        depth = 1
        pattern = re.compile(rb"/\*|\*/")
        while depth:
            found = self._find(pattern, i)
            if found is None:
                raise HostileDump(f"a comment opened after line {self.line} is never closed")
            depth += 1 if found.group() == b"/*" else -1
            i = found.end()
        return i

    def _dollar(self, at: int) -> int:
        if at > 0 and _IDENT_BYTE.match(self.buf, at - 1):
            return at + 1  # part of an identifier (a$b) or a parameter
        while len(self.buf) - at < 256 and self._more():
            pass
        tag = _DOLLAR_TAG.match(self.buf, at)
        if tag is None:
            return at + 1  # $1, a lone $
        end = self._find(re.compile(re.escape(tag.group())), tag.end())
        if end is None:
            raise HostileDump(f"a {tag.group().decode(errors='replace')} quote is never closed")
        return end.end()

    def _backslash(self, start: int, at: int) -> int:
        """At a backslash outside quotes: psql would run a meta-command. pg_dump's
        `\\restrict KEY` lines are dropped (-1: the caller starts the statement again);
        everything else is refused."""
        if _leading_end(self.buf, start) >= at:  # first on its line, in no statement
            while b"\n" not in self.buf[at:] and self._more():
                pass
            restrict = _RESTRICT.match(self.buf, at)
            if restrict:
                self._advance(restrict.end())
                return -1
        self._advance(at)
        word = re.match(rb"\\[^\s\\]*", self.buf[at : at + 64])
        name = word.group().decode(errors="replace") if word else "\\"
        raise HostileDump(
            f"line {self.line} holds the psql meta-command {name} outside quotes and COPY "
            "rows: refused (a dump from pg_dump or Odoo has none)"
        )

    def _classify(self, statement: Statement) -> Statement:
        head = _head(statement.text)
        statement.line += statement.text.count(b"\n", 0, len(statement.text) - len(head))
        if _COPY.match(head):
            if not _COPY_FROM_STDIN.match(head) or _PROGRAM.search(head):
                raise HostileDump(
                    f"line {statement.line}: a COPY to or from anything but stdin: refused"
                )
            statement.copy_in = True
        elif _REFUSE.match(head):
            words = b" ".join(head.split()[:3]).decode(errors="replace")
            raise HostileDump(
                f"line {statement.line}: `{words}` switches role or database, or changes "
                "roles, databases or the server: refused (an Odoo dump has none)"
            )
        return statement

    def copy_rows(self) -> Iterator[bytes]:
        """The rows after a COPY FROM stdin, in blocks, up to its `\\.` line (consumed)."""
        end = self.buf.find(b"\n", self.pos)
        while end < 0 and self._more():
            end = self.buf.find(b"\n", self.pos)
        if end < 0 or self.buf[self.pos : end].strip():
            raise HostileDump(f"line {self.line}: COPY rows must start on the next line")
        self._advance(end + 1)
        while True:
            found = _COPY_END.search(self.buf, self.pos)
            if found:
                if found.start() > self.pos:
                    yield self.buf[self.pos : found.start()]
                self._advance(found.end())
                return
            last = self.buf.rfind(b"\n", self.pos) + 1
            if last > self.pos:
                yield self.buf[self.pos : last]
                self._advance(last)
            self._drop_consumed()
            if not self._more():
                raise HostileDump(f"the COPY rows at line {self.line} have no \\. line")


def skipped(statement: Statement) -> bool:
    """A privilege or ownership statement, skipped as pg_restore --no-privileges --no-owner."""
    head = _head(statement.text)
    return bool(_SKIP.match(head))


PRIVILEGED_ROLES = ("pg_execute_server_program", "pg_write_server_files", "pg_read_server_files")


def refuse_privileged_session(conn: Any) -> None:
    """A session that is, or may become, a superuser (or run programs and touch files on
    the server) would let a dump out of its database: refused."""
    row = conn.execute(
        "SELECT session_user, EXISTS (SELECT 1 FROM pg_roles r"
        " WHERE (r.rolsuper OR r.rolname = ANY(%s))"
        " AND pg_has_role(session_user, r.oid, 'MEMBER'))",
        [list(PRIVILEGED_ROLES)],
    ).fetchone()
    if row[1]:
        raise HostileDump(
            f"the owner role {row[0]} is a superuser (or may run programs on the server): an "
            "imported dump is restored only by an unprivileged owner; pass --owner ROLE"
        )


def load(conn: Any, stream: IO[bytes]) -> tuple[int, int]:
    """Run the dump on `conn` (in its transaction); (statements run, statements skipped)."""
    lexer = Lexer(stream)
    ran = skips = 0
    for statement in lexer.statements():
        if statement.copy_in:
            with conn.cursor().copy(statement.text) as copy:
                for rows in lexer.copy_rows():
                    copy.write(rows)
        elif skipped(statement):
            skips += 1
            continue
        elif not _head(statement.text).strip(b"; \t\r\n"):
            continue  # comments only
        else:
            conn.execute(statement.text)
        ran += 1
    return ran, skips


def main() -> int:
    import psycopg

    try:
        conninfo = os.environ["ODBOX_SQLLOAD_CONNINFO"]
        # prepare_threshold None: dumps repeat statements (SET default_tablespace = ''), and
        # psycopg would prepare them after the fifth
        with psycopg.connect(conninfo, connect_timeout=10, prepare_threshold=None) as conn:
            refuse_privileged_session(conn)
            conn.commit()
            ran, skips = load(conn, sys.stdin.buffer)
        sys.stdout.write(f"{ran} {skips}\n")
    except HostileDump as e:
        sys.stderr.write(f"error: refused dump: {e}\n")
        return 1
    except psycopg.Error as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        sys.stderr.write(f"error: {first}\n")
        return 1
    except KeyError:
        sys.stderr.write("error: ODBOX_SQLLOAD_CONNINFO is not set\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

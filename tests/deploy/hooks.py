"""odbox-deploy --hook stand-ins, run with the phase as their last argument:

hooks.py kill PHASE <phase>           kill -9 the deploy (the hook's parent) at PHASE
hooks.py record FILE <phase>          append every phase to FILE
hooks.py capture PHASE OUT SOCKET PORT DB FILESTORE <phase>
                                      at PHASE, every table's and file's checksum into OUT
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


def main() -> None:
    action, *args, phase = sys.argv[1:]
    if action == "kill" and phase == args[0]:
        os.kill(os.getppid(), signal.SIGKILL)
    elif action == "record":
        with open(args[0], "a") as f:
            f.write(phase + "\n")
    elif action == "capture" and phase == args[0]:
        import psycopg

        from tests.deploy.helpers import checksums_of, filestore_checksums

        out, socket, port, db, filestore = args[1:]
        with psycopg.connect(host=socket, port=int(port), user="postgres", dbname=db,
                             autocommit=True) as conn:  # fmt: skip
            tables = checksums_of(lambda q, *p: conn.execute(q, p or None).fetchall())
        Path(out).write_text(
            json.dumps({"tables": tables, "files": filestore_checksums(Path(filestore))})
        )


if __name__ == "__main__":
    main()

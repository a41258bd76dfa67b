"""GET /odbox/health: 200 and {"status": "pass", ...} when Odoo answers with its database
and a writable filestore, 503 and what failed otherwise (one JSON document, no session)."""

import os
from pathlib import Path

from odoo import http
from odoo.http import request
from odoo.tools import config


def check_filestore(path):
    """pass: the folder is there and writable, or not made yet under a writable parent."""
    folder = Path(path)
    if folder.is_dir():
        ok = os.access(folder, os.W_OK | os.X_OK)
        return {"status": "pass" if ok else "fail", "path": path}
    ok = folder.parent.is_dir() and os.access(folder.parent, os.W_OK | os.X_OK)
    return {"status": "pass" if ok else "fail", "path": path, "exists": False}


class OdboxHealth(http.Controller):
    @http.route("/odbox/health", type="http", auth="none", methods=["GET"], save_session=False)
    def health(self):
        if not request.db:  # loaded server-wide: Odoo found no database (or may not list them)
            body = {
                "status": "fail",
                "checks": {
                    "database": {"status": "fail", "error": "no database selected"},
                    "filestore": {"status": "fail", "error": "no database selected"},
                },
            }
            return request.make_json_response(body, status=503)
        checks = {}
        try:
            cr = request.env.cr
            cr.execute("SELECT latest_version FROM ir_module_module WHERE name = 'base'")
            row = cr.fetchone()
            checks["database"] = {"status": "pass", "name": cr.dbname, "base": row and row[0]}
        except Exception as e:  # the answer is the report, not a traceback
            message = str(e).strip().splitlines()
            checks["database"] = {"status": "fail", "error": message[0] if message else repr(e)}
        checks["filestore"] = check_filestore(config.filestore(request.db))
        ok = all(c["status"] == "pass" for c in checks.values())
        body = {"status": "pass" if ok else "fail", "checks": checks}
        return request.make_json_response(body, status=200 if ok else 503)

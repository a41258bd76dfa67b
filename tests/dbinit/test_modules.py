"""The plain modules under the command line: names and privilege sets."""

from __future__ import annotations

import pytest

from dbinit import acl
from dbinit.acl import Grant
from dbinit.names import Names, check_name
from odbox_common.errors import UsageError


@pytest.mark.parametrize("name", ["odoo", "_x", "odoo-prod", "a1_b-2", "o" * 63])
def test_plain_names_are_accepted(name):
    assert check_name(name, "role") == name


@pytest.mark.parametrize(
    "name", ["", "Odoo", "1odoo", "odoo prod", 'x"y', "x;y", "é", "o" * 64, "odoo\n", "-x"]
)
def test_other_names_are_refused(name):
    with pytest.raises(UsageError):
        check_name(name, "role")


def test_the_handyman_is_named_after_the_odoo_role():
    assert Names.make(odoo="erp").handyman == "erp_handyman"
    assert Names.make(odoo="erp", handyman="helper").handyman == "helper"


def test_without_pgadmin_its_names_are_not_managed():
    names = Names.make(with_pgadmin=False, pgadmin="odoo", pgadmin_db="odoo")
    assert names.roles == ("admin", "odoo") and names.databases == ("odoo",)


def test_diff_grants_what_is_missing_and_revokes_what_is_extra():
    actual = acl.grants([("odoo", "CONNECT", False), ("PUBLIC", "CONNECT", False),
                         ("pgadmin", "CONNECT", True)])  # fmt: skip
    fix = acl.diff(actual, acl.to("odoo", "CONNECT", "CREATE") | acl.to("pgadmin", "CONNECT"),
                   exact=True)  # fmt: skip
    assert fix.grant == (Grant("odoo", "CREATE"),)
    assert fix.revoke == (Grant("PUBLIC", "CONNECT"),)
    assert fix.revoke_grant_option == (Grant("pgadmin", "CONNECT"),)


def test_diff_with_forbidden_leaves_everything_else_alone():
    actual = acl.grants([("monitor", "CONNECT", False), ("PUBLIC", "TEMPORARY", False)])
    fix = acl.diff(actual, set(), forbidden=[("PUBLIC", "*")])
    assert fix.revoke == (Grant("PUBLIC", "TEMPORARY"),) and not fix.grant
    assert not acl.diff(actual, set(), forbidden=[("odoo", "*")])


def test_only_known_privilege_keywords_become_sql():
    fix = acl.AclFix((Grant("odoo", "SELECT; DROP TABLE x"),), (), ())
    from psycopg import sql

    with pytest.raises(ValueError, match="unknown privilege"):
        acl.statements(fix, sql.SQL("TABLE t"), "table t")

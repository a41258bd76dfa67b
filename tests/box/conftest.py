"""Fixtures of the real-Odoo tests: one box for the session, made new once, and a fresh copy of
its database and filestore for each test (installing base, mail and contacts takes minutes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from tests.box.harness import (
    DB,
    Box,
    OdooInstall,
    odoo_source,
    peer_postgres,
    prepare_odoo,
    temp_base,
    why_not,
)

TEMPLATE = "odoo_template"


@pytest.fixture(scope="session")
def odoo_install() -> OdooInstall:
    if reason := why_not():
        pytest.skip(reason)
    source = odoo_source()
    assert source is not None
    return prepare_odoo(source)


@dataclass(frozen=True)
class FirstStart:
    """What the new box's first start did: dbinit setup, then the module's odoo-initialize."""

    setup: str
    initialize: subprocess.CompletedProcess[str]
    seconds: float


@dataclass
class Session:
    box: Box
    first_start: FirstStart


@pytest.fixture(scope="session")
def box_session(odoo_install: OdooInstall) -> Iterator[Session]:
    with peer_postgres() as pg, temp_base() as base:
        box = Box.make(pg, odoo_install, base)
        began = time.monotonic()
        setup = box.setup()
        initialize = box.initialize()
        first = FirstStart(setup, initialize, time.monotonic() - began)
        if initialize.returncode == 0:
            box.sql(f"CREATE DATABASE {TEMPLATE} TEMPLATE {DB}")
            subprocess.run(["cp", "-a", box.filestore, base / "template-filestore"], check=True)
        try:
            yield Session(box, first)
        finally:
            box.stop()


def reset(box: Box) -> None:
    """The box as its first start left it: the template's database and filestore, set up."""
    box.stop()
    for (name,) in box.sql(
        "SELECT datname FROM pg_database WHERE datname NOT IN ('postgres', %s)"
        " AND NOT datistemplate",
        "postgres",
        TEMPLATE,
    ):
        box.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    box.sql(f"CREATE DATABASE {DB} TEMPLATE {TEMPLATE} OWNER odoo")
    filestore_root = box.data_dir / "filestore"
    for folder in filestore_root.iterdir():
        shutil.rmtree(folder)
    subprocess.run(["cp", "-a", box.base / "template-filestore", box.filestore], check=True)
    box.setup()
    box.write_unit(0)  # what a restore's --odoo-start starts when the test did not start Odoo


@pytest.fixture
def first_start(box_session: Session) -> FirstStart:
    return box_session.first_start


@pytest.fixture
def box(box_session: Session) -> Iterator[Box]:
    """The session's box with a fresh copy of the first start's database and filestore."""
    first = box_session.first_start
    assert first.initialize.returncode == 0, (
        f"the new box's first start failed:\n{first.initialize.stdout}\n{first.initialize.stderr}"
    )
    reset(box_session.box)
    try:
        yield box_session.box
    finally:
        box_session.box.stop()


# ---------------------------------------------------------------- CI: no silent skip

REQUIRE = "ODBOX_REQUIRE_ODOO_TESTS"  # .ci/run sets it
_skipped: list[str] = []
_ran: list[str] = []


_marked: set[str] = set()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("odoo"):
            _marked.add(item.nodeid)
            # The first test also builds the venv and installs base, mail and contacts: on a
            # busy 2-core machine that can pass the suite's 600 s.
            item.add_marker(pytest.mark.timeout(1800))


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.nodeid not in _marked:
        return
    if report.skipped:
        reason = report.longrepr[-1] if isinstance(report.longrepr, tuple) else report.longrepr
        _skipped.append(f"{report.nodeid}: {reason}")
    elif report.when == "call":
        _ran.append(report.nodeid)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With ODBOX_REQUIRE_ODOO_TESTS=1 and an Odoo tree here, a skipped or deselected odoo test
    fails the run: CI must not go green without having run Odoo."""
    if os.environ.get(REQUIRE) != "1" or odoo_source() is None:
        return
    if not _skipped and _ran:
        return
    why = "; ".join(_skipped[:3]) if _skipped else "none was selected"
    line = f"error: an Odoo tree is at {odoo_source()} but the odoo tests did not run: {why}"
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(line, red=True)
    else:
        print(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED

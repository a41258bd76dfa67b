"""The real-Odoo box of tests/box, with odbox_deploy_demo v1 installed and a first deploy
recorded, once a session; each test gets a fresh copy of that database and filestore."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

import pytest

from tests.box.conftest import Session, box_session, odoo_install  # noqa: F401  (fixtures)
from tests.box.harness import DB
from tests.deploy.helpers import DEMO, Deploy, install_version

TEMPLATE = "odoo_deploy_template"


@pytest.fixture(scope="session")
def deploy_session(
    box_session: Session,  # noqa: F811
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Deploy]:
    first = box_session.first_start
    assert first.initialize.returncode == 0, first.initialize.stderr
    box = box_session.box
    from tests.box.conftest import reset

    reset(box)
    deploy = Deploy(box, tmp_path_factory.mktemp("deploy"))
    install_version(box, 1)
    result = box.as_odoo([str(box.base / "bin" / "odoo"), "--config", str(box.base / "etc" /
                         "odoo.conf"), "-i", DEMO, "--stop-after-init", "--no-http"],
                         timeout=1800)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    deploy.ok("apply")  # the first deploy: records the checksums
    box.sql(f"CREATE DATABASE {TEMPLATE} TEMPLATE {DB}")
    subprocess.run(["cp", "-a", box.filestore, deploy.base / "template-filestore"], check=True)
    try:
        yield deploy
    finally:
        shutil.rmtree(box.base / "addons" / DEMO, ignore_errors=True)
        box.sql(f"DROP DATABASE IF EXISTS {TEMPLATE}")


@pytest.fixture
def deploy(deploy_session: Deploy, tmp_path) -> Iterator[Deploy]:
    """The box at v1, deployed, Odoo stopped; a new backup repository and deploy state."""
    box = deploy_session.box
    box.stop()
    for (name,) in box.sql("SELECT datname FROM pg_database WHERE datname NOT IN "
                           "('postgres', 'odoo_template', %s) AND NOT datistemplate",
                           "postgres", TEMPLATE):  # fmt: skip
        box.sql(f'DROP DATABASE "{name}" WITH (FORCE)')
    box.sql(f"CREATE DATABASE {DB} TEMPLATE {TEMPLATE} OWNER odoo")
    for folder in (box.data_dir / "filestore").iterdir():
        shutil.rmtree(folder)
    subprocess.run(["cp", "-a", deploy_session.base / "template-filestore", box.filestore],
                   check=True)  # fmt: skip
    box.setup()
    box.write_unit(0)
    install_version(box, 1)
    deploy = deploy_session.fresh(tmp_path)
    try:
        yield deploy
    finally:
        box.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """As tests/box's: the first odoo test may build Odoo's venv and install its modules."""
    for item in items:
        if item.get_closest_marker("odoo") and item.nodeid.startswith("tests/deploy/"):
            item.add_marker(pytest.mark.timeout(1800))

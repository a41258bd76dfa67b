"""`plan`: what an update of this database to the code on disk must do.

- an installed module whose files' checksum differs from the one recorded at the last deploy is
  updated (`-u`); Odoo then also updates every installed module that depends on it
  (ir.module.module.button_upgrade), which the plan lists as `cascade`;
- a change of Odoo itself (its framework's files or release) is `-u base`, which Odoo widens to
  every installed module (button_upgrade on base): the framework defines how every model maps to
  tables and every view is checked against it, so no module can be assumed untouched. A new
  series (16.0 to 17.0) is refused: `-u` does not migrate a database between series (that is
  Odoo's upgrade service or OpenUpgrade);
- a module the addons path holds that the database has never seen (not in ir_module_module) and
  that Odoo would auto-install (auto_install, every trigger installed) is installed (`-i`);
  Odoo's `-u` alone would not install it (button_install only looks at auto-install modules when
  something else is being installed);
- an installed module missing from the addons path is refused (exit 3): Odoo would fail to load
  it, or an update would drop its data;
- no checksums recorded yet (the first deploy): nothing is updated, the checksums are recorded.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from odbox_deploy.addons import AddonsPath, ChecksumCache, Odoo, read_conf
from odbox_deploy.records import DatabaseState, Recorded, read_state


@dataclass
class Plan:
    update: list[str] = field(default_factory=list)
    install: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    first: bool = False  # nothing recorded yet: record, update nothing
    odoo_changed: bool = False
    series_changed: str | None = None  # "16.0 -> 17.0"
    reasons: dict[str, str] = field(default_factory=dict)
    checksums: Recorded = field(default_factory=Recorded)  # of the code on disk, to record
    recorded: Recorded | None = None

    @property
    def work(self) -> bool:
        """Whether Odoo must run (-u or -i); a first deploy only records."""
        return bool(self.update or self.install)

    @property
    def nothing(self) -> bool:
        return not self.work and not self.first and self.recorded == self.checksums

    def odoo_arguments(self) -> list[str]:
        args = []
        if self.update:
            args += ["-u", ",".join(self.update)]
        if self.install:
            args += ["-i", ",".join(self.install)]
        return args

    def as_json(self) -> dict[str, Any]:
        doc = {"schema": 1, **asdict(self)}  # a key added keeps 1, one renamed or removed: 2
        doc.pop("checksums")
        doc.pop("recorded")
        doc["odoo_arguments"] = self.odoo_arguments()
        doc["nothing_to_do"] = self.nothing
        return doc


@dataclass(frozen=True)
class Code:
    """Where the code is: Odoo's package folder and the box's odoo.conf."""

    odoo_root: Path
    conf: Path
    cache: Path | None = None  # the checksum cache (in the deploy's state folder)

    def addons_path(self) -> tuple[Odoo, AddonsPath]:
        odoo = Odoo(self.odoo_root)
        series = odoo.release["series"]
        return odoo, AddonsPath.of(self.odoo_root, read_conf(self.conf), series)


def make_plan(code: Code, conninfo: str) -> Plan:
    return plan_for(code, read_state(conninfo))


def plan_for(code: Code, state: DatabaseState) -> Plan:
    odoo, path = code.addons_path()
    release = odoo.release
    plan = Plan(recorded=state.recorded)
    cache = ChecksumCache.load(code.cache)
    plan.checksums.odoo = odoo.checksum(cache)
    plan.checksums.series = release["series"]
    installed = state.installed()
    for name in installed:
        addon = path.find(name)
        if addon is None:
            plan.missing.append(name)
        else:
            plan.checksums.modules[name] = addon.checksum(cache)
    cache.save()
    plan.install = _auto_installs(path, state, set(installed))
    recorded = state.recorded
    if recorded is None:
        plan.first = True
        plan.install = []  # a first deploy changes nothing but the record
        return plan
    if recorded.series and recorded.series != release["series"]:
        plan.series_changed = f"{recorded.series} -> {release['series']}"
    if recorded.odoo != plan.checksums.odoo:
        plan.odoo_changed = True
        plan.update = ["base"]
        plan.reasons["base"] = "Odoo itself changed: -u base, which Odoo widens to every module"
        return plan
    for name, checksum in plan.checksums.modules.items():
        before = recorded.modules.get(name)
        if before is None:
            # installed since the last deploy (from Apps, or by an earlier -i): its files are
            # what Odoo installed, so record them
            continue
        if before != checksum:
            plan.update.append(name)
            plan.reasons[name] = "files changed"
    for name in plan.install:
        plan.reasons[name] = "new, auto-installed by Odoo's rules"
    return plan


def _auto_installs(path: AddonsPath, state: DatabaseState, installed: set[str]) -> list[str]:
    """Modules the database has never seen that Odoo's button_install would auto-install:
    auto_install true (every dependency is a trigger) or a list of triggers, each installed or
    itself auto-installed here. Odoo also demands one trigger be newly installed; a module
    whose every trigger is already installed is installed by this deploy's `-i`."""
    unknown = sorted(path.names() - set(state.modules))
    manifests = {}
    for name in unknown:
        addon = path.find(name)
        if addon is not None:
            manifest = addon.manifest()
            if manifest.get("installable", True) and manifest.get("auto_install", False):
                manifests[name] = manifest
    chosen: list[str] = []
    have = set(installed)
    progress = True
    while progress:
        progress = False
        for name, manifest in manifests.items():
            if name in have:
                continue
            auto = manifest["auto_install"]
            if isinstance(auto, (list, tuple, set)):
                triggers = set(auto)
            else:
                triggers = set(manifest.get("depends", []))
            if triggers <= have:
                chosen.append(name)
                have.add(name)
                progress = True
    return sorted(chosen)

"""`dbinit check`'s report: the privilege matrix (cells), the drift, and the small
helpers that word a cell."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from dbinit.names import Names

OTHERS = "other roles"
SHOWN_NAMES = 5


@dataclass
class Cell:
    text: str
    ok: bool = True


@dataclass
class Report:
    where: str
    names: Names
    columns: list[str]
    rows: list[tuple[str, dict[str, Cell]]] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    # The drift setup cannot repair (ownership, an encoding): a human must act.
    by_hand: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.drift

    def add(self, capability: str, cells: dict[str, Cell]) -> None:
        self.rows.append((capability, cells))

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": 1,  # dbinit.cli.JSON_SCHEMA
            "server": self.where,
            "ok": self.ok,
            "columns": self.columns,
            "matrix": [
                {
                    "capability": capability,
                    "cells": {c: {"value": cell.text, "ok": cell.ok} for c, cell in cells.items()},
                }
                for capability, cells in self.rows
            ],
            "drift": self.drift,
            "by_hand": self.by_hand,
            "notes": self.notes,
        }


def yes_no(value: bool) -> str:
    return "yes" if value else "no"


def first_few(items: list[str]) -> str:
    shown = ", ".join(items[:SHOWN_NAMES])
    return shown + (f" and {len(items) - SHOWN_NAMES} more" if len(items) > SHOWN_NAMES else "")


@dataclass(frozen=True)
class RoleFacts:
    name: str
    exists: bool
    superuser: bool = False
    login: bool = False
    createdb: bool = False
    createrole: bool = False
    replication: bool = False
    bypassrls: bool = False
    password: bool = False


def count_cell(total: int, lacking: list[str]) -> tuple[str, bool]:
    if not lacking:
        return (f"all ({total})" if total else "all (none yet)", True)
    if len(lacking) == total:
        return ("none", False)
    return (part_of(total - len(lacking), total), False)


def part_of(part: int, total: int) -> str:
    return f"{part} of {total}"


def as_shown(roles: list[str]) -> list[str]:
    return ["PUBLIC" if r == "public" else r for r in roles]

"""The addons Odoo would load, found as Odoo finds them, and a checksum of each one's files.

The checksum is click-odoo-update's idea: every file of the addon's folder, by sorted relative
path and content, compiled Python (`*.pyc`, `*.pyo`, `__pycache__`) left out, so a rebuild that
only recompiles changes nothing. SHA-256 over length-prefixed names and contents: a file moved
between two names cannot collide with another layout.
"""

from __future__ import annotations

import ast
import contextlib
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from odbox_common.errors import ToolError

SKIPPED_SUFFIXES = (".pyc", ".pyo")
MANIFEST = "__manifest__.py"


@dataclass(frozen=True)
class Addon:
    name: str
    path: Path

    def manifest(self) -> dict[str, Any]:
        """The manifest, read as data (ast.literal_eval, as Odoo does): never executed."""
        source = (self.path / MANIFEST).read_text(encoding="utf-8")
        try:
            value = ast.literal_eval(source)
        except (ValueError, SyntaxError) as e:
            raise ToolError(f"the manifest of {self.name} ({self.path / MANIFEST}) is not one "
                            f"Python literal: {e}; fix the addon") from None  # fmt: skip
        if not isinstance(value, dict):
            raise ToolError(f"the manifest of {self.name} ({self.path / MANIFEST}) is not a dict")
        return value

    def checksum(self, cache: ChecksumCache | None = None) -> str:
        return folder_checksum(self.path, cache=cache)


def _files(folder: Path, skip: tuple[str, ...]) -> list[str]:
    """The relative paths the checksum covers, sorted: compiled Python and the top-level
    names in `skip` left out; symlinks followed, as Odoo reads through them."""
    files: list[str] = []
    for top, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = [d for d in dirs if d != "__pycache__"]
        relative = os.path.relpath(top, folder)
        if relative == ".":
            dirs[:] = [d for d in dirs if d not in skip]
            names = [n for n in names if n not in skip]
        for name in names:
            if not name.endswith(SKIPPED_SUFFIXES):
                files.append(os.path.normpath(f"{relative}/{name}"))
    return sorted(files)


def _signature(folder: Path, files: list[str]) -> str:
    """What stat(2) says of every file: a content change that keeps all of it is impossible
    without resetting ctime, which no tool can. The cache's key."""
    digest = hashlib.sha256(str(folder.resolve()).encode("utf-8", "surrogateescape"))
    for name in files:
        st = (folder / name).stat()
        digest.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0"
                      f"{st.st_ino}\0{st.st_dev}\n".encode("utf-8", "surrogateescape"))  # fmt: skip
    return digest.hexdigest()


def folder_checksum(
    folder: Path, skip: tuple[str, ...] = (), cache: ChecksumCache | None = None
) -> str:
    """SHA-256 of every file under `folder` (_files): sorted relative paths and contents.
    With a cache, a folder whose files' stat is as when last read is not read again (the
    checksum of an unchanged box in well under a second instead of a second of reading)."""
    files = _files(folder, skip)
    signature = _signature(folder, files) if cache is not None else ""
    if cache is not None and (known := cache.get(signature)):
        return known
    digest = hashlib.sha256()
    for name in files:
        encoded = name.encode("utf-8", "surrogateescape")
        digest.update(len(encoded).to_bytes(8, "big") + encoded)
        file_digest = hashlib.sha256()
        with open(folder / name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                file_digest.update(block)
        digest.update(file_digest.digest())
    checksum = digest.hexdigest()
    if cache is not None:
        cache.put(signature, checksum)
    return checksum


@dataclass
class ChecksumCache:
    """signature -> checksum, kept in the deploy's state folder (0600). Only a speed-up: an
    unreadable or missing file is an empty cache, and a cache that cannot be written is not."""

    path: Path | None
    entries: dict[str, str] = field(default_factory=dict)
    used: dict[str, str] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path | None) -> ChecksumCache:
        import json

        entries: dict[str, str] = {}
        if path is not None:
            with contextlib.suppress(OSError, ValueError, TypeError):
                loaded = json.loads(path.read_text())
                entries = {str(k): str(v) for k, v in dict(loaded).items()}
        return cls(path, entries)

    def get(self, signature: str) -> str | None:
        found = self.entries.get(signature)
        if found is not None:
            self.used[signature] = found
        return found

    def put(self, signature: str, checksum: str) -> None:
        self.used[signature] = checksum

    def save(self) -> None:
        """Keep what this run used (what is gone from the disk drops out)."""
        import json

        from odbox_common.files import write_private

        if self.path is None or self.used == self.entries:
            return
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            write_private(self.path, json.dumps(self.used).encode())


@dataclass(frozen=True)
class AddonsPath:
    """Odoo's odoo.addons.__path__: the package's own addons first, then the data folder's
    addons/<series>, then odoo.conf's addons_path in order; the first folder holding a module
    wins (odoo/modules/module.py, initialize_sys_path and get_module_path)."""

    folders: tuple[Path, ...]

    @classmethod
    def of(cls, odoo_root: Path, conf: dict[str, str], series: str) -> AddonsPath:
        folders = [odoo_root / "addons"]
        data_dir = conf.get("data_dir")
        if data_dir:
            folders.append(Path(data_dir) / "addons" / series)
        for entry in conf.get("addons_path", "").split(","):
            if entry.strip():
                folders.append(Path(entry.strip()))
        unique = list(dict.fromkeys(f.absolute() for f in folders))
        return cls(tuple(f for f in unique if f.is_dir()))

    def find(self, name: str) -> Addon | None:
        for folder in self.folders:
            candidate = folder / name
            if (candidate / MANIFEST).is_file():
                return Addon(name, candidate)
        return None

    def names(self) -> set[str]:
        """Every module any folder holds (a folder with a manifest)."""
        found: set[str] = set()
        for folder in self.folders:
            with os.scandir(folder) as entries:
                for entry in entries:
                    if (Path(entry.path) / MANIFEST).is_file():
                        found.add(entry.name)
        return found


@dataclass(frozen=True)
class Odoo:
    """Odoo itself: the `odoo` package folder (release.py, addons/, the framework)."""

    root: Path

    @property
    def release(self) -> dict[str, Any]:
        """release.py's version and series, read as data (never imported: it is the new code)."""
        found: dict[str, Any] = {}
        try:
            tree = ast.parse((self.root / "release.py").read_text(encoding="utf-8"))
        except OSError as e:
            raise ToolError(f"{self.root} is not Odoo's package folder (no release.py: "
                            f"{e.strerror}); pass --odoo-root") from None  # fmt: skip
        for node in tree.body:
            # version_info = (17, 0, 0, FINAL, 0, ''): the first three are numbers
            if (
                isinstance(node, ast.Assign)
                and [getattr(t, "id", None) for t in node.targets] == ["version_info"]
                and isinstance(node.value, ast.Tuple)
                and len(node.value.elts) >= 3
            ):
                with contextlib.suppress(ValueError, SyntaxError):
                    found["version_info"] = tuple(ast.literal_eval(e) for e in node.value.elts[:3])
        info = found.get("version_info")
        if not isinstance(info, tuple) or len(info) < 2:
            raise ToolError(f"cannot read Odoo's version_info from {self.root / 'release.py'}")
        return {"series": f"{info[0]}.{info[1]}", "version_info": list(info)}

    def checksum(self, cache: ChecksumCache | None = None) -> str:
        """The framework's files (everything of the package but its addons, each of which has
        its own checksum)."""
        return folder_checksum(self.root, skip=("addons",), cache=cache)


def read_conf(path: Path) -> dict[str, str]:
    """odoo.conf's [options] (configparser, as Odoo reads it)."""
    import configparser

    parser = configparser.RawConfigParser()
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f)
    except OSError as e:
        raise ToolError(f"cannot read Odoo's configuration {path}: {e.strerror}") from None
    except configparser.Error as e:
        raise ToolError(f"Odoo's configuration {path} does not parse: {e}") from None
    return dict(parser.items("options")) if parser.has_section("options") else {}

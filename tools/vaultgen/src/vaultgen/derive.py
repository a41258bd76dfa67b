"""Derived files (crypt hashes, the SSH public key, certificates) and the names each
certificate is valid for: when one is stale, and how it is remade.

A part of generate's `Planner`, kept apart so that each reads in one sitting: the
attributes below are the planner's, set in its `__init__`.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from odbox_common.errors import ToolError as VaultError
from vaultgen import layout
from vaultgen.files import sha256_hex
from vaultgen.layout import Item, Kind
from vaultgen.plans import Request
from vaultgen.records import Manifest, State
from vaultgen.verify import cert_problem, hash_problem, password_from_bytes, ssh_public_problem


class DerivedFiles:
    root: Path
    request: Request
    now: dt.datetime
    content: dict[str, bytes]
    imported: set[str]  # certificate stems the vault CA must never re-sign
    old_state: State
    new_state: State
    old_manifest: Manifest
    new_manifest: Manifest

    def known(self, item: Item) -> dict[str, str]:
        """What the last run recorded of this item in the local state cache."""
        return self.old_state.files.get(item.path, {})

    # -- certificates' names --------------------------------------------------

    def record_leaf(self, item: Item, existing: bytes | None) -> None:
        """What a leaf must be valid for, kept in manifest.json so that a deleted or expiring
        certificate comes back with the same names and validity."""
        if item.name in self.imported:
            self.new_manifest.certificates[item.name] = {"imported": True}
            return
        recorded = self.old_manifest.certificates.get(item.name, {})
        spec: dict[str, Any]
        if (leaf := self.request.leaves.get(item.name)) is not None:
            days = leaf.days or recorded.get("days")
            spec = {"cn": leaf.common_name, "sans": [leaf.common_name, *leaf.sans], "days": days}
        elif "cn" in recorded:
            spec = dict(recorded)
        else:
            spec = self.leaf_spec_from(existing, layout.cn_of_stem(item.name))
        from_cert = list(dict.fromkeys(spec["sans"]))  # keep order, drop repeats
        self.new_manifest.certificates[item.name] = {
            "cn": spec["cn"],
            "sans": from_cert,
            "days": spec.get("days") or layout.LEAF_DAYS,
        }

    @staticmethod
    def leaf_spec_from(existing: bytes | None, default_cn: str) -> dict[str, Any]:
        from vaultgen import pki

        if existing is not None:
            try:
                info = pki.cert_info(existing, "certificate")
                if info.common_name:
                    return {"cn": info.common_name, "sans": info.sans or [info.common_name]}
            except VaultError:
                pass
        return {"cn": default_cn, "sans": pki.default_sans(default_cn)}

    # -- derived files ------------------------------------------------------

    def inputs_signature(self, item: Item) -> str:
        parts = [sha256_hex(self.content[dep]) for dep in item.deps]
        if item.kind is Kind.LEAF_CERT:
            parts.append(json.dumps(self.new_manifest.certificates[item.name], sort_keys=True))
        return sha256_hex("\n".join(parts).encode())

    def staleness(self, item: Item, content: bytes) -> str:
        """Why a derived file must be remade, or "" when it is current."""
        known = self.known(item)
        renew_after = known.get("renew_after")
        if (
            known.get("sha256") == sha256_hex(content)
            and known.get("inputs") == self.inputs_signature(item)
            and (renew_after is None or self.now.isoformat() < renew_after)
        ):
            return ""  # unchanged since it was last verified
        dep = self.content[item.deps[0]]
        if item.kind in (Kind.SHA512, Kind.YESCRYPT):
            return hash_problem(item.kind, dep, content)
        if item.kind is Kind.SSH_PUB:
            return ssh_public_problem(content, dep)
        if item.name in self.imported:
            if cert_problem(item.kind, content, dep, None, from_vault_ca=False, now=self.now) == (
                "does not match its key"
            ):
                raise VaultError(
                    f"{self.root / item.path} was imported and does not match "
                    f"{self.root / item.deps[0]}: import the certificate and its key again"
                )
            return ""  # only its issuer can renew it; `check` reports when it is due
        ca_cert = self.content[item.deps[1]] if item.kind is Kind.LEAF_CERT else None
        problem = cert_problem(item.kind, content, dep, ca_cert, from_vault_ca=True, now=self.now)
        if problem or item.kind is Kind.CA_CERT:
            return problem
        from vaultgen import pki

        spec = self.new_manifest.certificates[item.name]
        info = pki.cert_info(content, item.path)
        if info.common_name != spec["cn"] or sorted(spec["sans"]) != sorted(info.sans):
            return "names changed"
        if abs((info.not_after - info.not_before).days - spec["days"]) > 1:
            return "validity changed"
        return ""

    def derive(self, item: Item) -> bytes:
        dep = self.content[item.deps[0]]
        if item.kind in (Kind.SHA512, Kind.YESCRYPT):
            from vaultgen import crypthash

            password = password_from_bytes(dep, item.deps[0])
            method: crypthash.Method = "sha512" if item.kind is Kind.SHA512 else "yescrypt"
            return (crypthash.hash_password(password, method) + "\n").encode()
        if item.kind is Kind.SSH_PUB:
            from vaultgen.sshkey import public_key_line

            return public_key_line(dep)
        from vaultgen import pki

        if item.kind is Kind.CA_CERT:
            return pki.make_ca_cert(dep)
        if item.name in self.imported:
            raise VaultError(
                f"{self.root / item.path} is missing and was imported: import it again"
            )
        spec = self.new_manifest.certificates[item.name]
        ca_cert, ca_key = self.content[item.deps[1]], self.content[item.deps[2]]
        return pki.make_leaf_cert(dep, spec["cn"], spec["sans"], ca_cert, ca_key, spec["days"])

    def remember(self, item: Item, content: bytes) -> None:
        entry = {"sha256": sha256_hex(content)}
        if item.derived:
            entry["inputs"] = self.inputs_signature(item)
        known = self.known(item)
        if known.get("sha256") == entry["sha256"] and "renew_after" in known:
            entry["renew_after"] = known["renew_after"]  # same certificate, same dates
        elif item.kind in (Kind.CA_CERT, Kind.LEAF_CERT):
            from vaultgen import pki

            try:
                info = pki.cert_info(content, item.path)
                entry["renew_after"] = (info.not_after - pki.RENEW_WITHIN).isoformat()
            except VaultError:
                pass
        self.new_state.files[item.path] = entry

    # -- encryption ---------------------------------------------------------

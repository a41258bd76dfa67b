"""`plan`: the steps of a pull, each with the sizes preflight found; it changes nothing."""

from __future__ import annotations

from k8s_migrate.kube import Cluster
from k8s_migrate.lease import held
from k8s_migrate.preflight import ANNOTATION, Found, Target, preflight
from odbox_common.console import count_of, human_size


def plan_steps(target: Target, found: Found, sink_text: str, scale_back: bool) -> list[str]:
    """What a pull would do, each step with the sizes found."""
    ns, name, n = target.namespace, target.deployment, found.replicas
    fs = (
        f"{count_of(found.filestore_files or 0, 'file')}, {_size(found.filestore_bytes)}"
        if found.filestore_bytes is not None
        else "size known once the helper pod runs"
    )
    done: list[str] = []
    if found.owner is not None:
        done.append(
            f"note: {held(ns, name, found.owner)}; a pull now stops here (exit 4) and "
            "changes nothing"
        )
    if found.leftovers:
        done.append(
            f"delete the helper pods left by a pull that was killed: {', '.join(found.leftovers)}"
        )
    if found.writers:
        done.append(
            f"note: other writers of Odoo's data: {found.writers.text()}; a pull stops here "
            "(exit 1) unless --force"
        )
    done += [f"note: {line}" for line in found.controllers]
    if found.current:
        done.append(
            f"scale deployment {ns}/{name} from {n} to 0 (noting {n} in its annotation "
            f"{ANNOTATION} first) and wait until its pods are gone "
            f"({', '.join(found.odoo_pods) or 'none running'})"
        )
    elif found.remembered:
        done.append(found.remembered.replace(" is at 0,", " is already at 0,", 1))
    else:
        done.append(f"deployment {ns}/{name} is at 0 replicas: nothing to scale")
    done += [
        f"start a helper pod (image {found.image}) with PVC {target.pvc} mounted read-only",
        _dump_step(target, found, sink_text),
        f"stream a tar of {target.filestore}/ ({fs}) into {sink_text}",
    ]
    if not n:
        done.append("delete the helper pod")
    elif scale_back:
        done.append(f"delete the helper pod; scale {name} back to {n} and remove the annotation")
    else:
        done.append(
            f"delete the helper pod; leave {name} at 0 with its annotation "
            f"{ANNOTATION}={n} (--scale-back restores {n})"
            + ("" if found.current or found.stopped else "; if the pull fails, it stays at 0")
        )
    return done


# What a dump restart is estimated with: an exec stream's pace through an API server (a
# stated guess, not a measure: it runs over the API server, kubelet and the runtime).
DUMP_RATE = 20_000_000  # bytes per second


def _dump_step(target: Target, found: Found, sink_text: str) -> str:
    """The dump's step: where it runs, the versions and size found, and what a dropped
    stream costs (the dump is taken again from its start: it must be consistent)."""
    command = " ".join(["pg_dump", *found.db.connection(), target.db_name])
    if target.db_host:
        where = (
            f"in the helper pod (image {found.image}), against {target.db_host}:"
            f"{target.db_port}: its pg_dump's version, the connection and the database's size "
            "are checked there once it runs (before Odoo is scaled down, when the helper pod "
            "can start while Odoo runs)"
        )
        return f"run `{command}` {where}, into {sink_text}; a dump cut short is taken again whole"
    seconds = found.db_bytes / DUMP_RATE
    restart = (
        f"a dump cut short is taken again from its start: {_size(found.db_bytes)} again, "
        f"about {_duration(seconds)} at {DUMP_RATE // 1_000_000} MB/s (an exec stream's usual "
        "pace; the database's size on disk, its dump is smaller)"
    )
    return (
        f"run `{command}` in pod {target.db_pod} (container {found.db.container}; "
        f"{found.pg_dump}, server {found.server_version}; database "
        f"{_size(found.db_bytes)}) into {sink_text}; {restart}"
    )


def _duration(seconds: float) -> str:
    if seconds < 90:
        return f"{max(seconds, 1):.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _size(n: int | None) -> str:
    return "unknown" if n is None else human_size(n)


def describe_plan(cluster: Cluster, target: Target, sink_text: str, scale_back: bool) -> list[str]:
    """The steps of `pull` with the sizes found; only GET requests."""
    found = preflight(cluster, target, sizes_from_odoo=True)
    return [*plan_steps(target, found, sink_text, scale_back), *found.steps]

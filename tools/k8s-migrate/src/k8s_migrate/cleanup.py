"""Step 6 of a pull, whatever happened: the helper pod deleted, the deployment scaled back
(unless the pull worked without --scale-back) and watched for pods that wait for their
volume, the annotations removed; what could not be done is one phrase each, with the
kubectl command that does it.
"""

from __future__ import annotations

import contextlib
import time
from typing import Any

from k8s_migrate.kube import Cluster, KubeError, refused
from k8s_migrate.lease import PULLING, STOPPED
from k8s_migrate.preflight import ANNOTATION, Found, Target
from k8s_migrate.transfer import Changed
from odbox_common.errors import ExitCode, ToolError

CLEANUP_TRIES = 5  # scale-back attempts, 1+2+4+8 s apart
BACK_WAIT = 60  # seconds Odoo's pods, scaled back, are watched for a volume they wait for


class CleanupFailed(ToolError):
    """The pull stopped (or worked), and putting the cluster back failed too."""

    def __init__(self, message: str, exit_code: ExitCode = ExitCode.FAILED) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def what_to_put_back(
    found: Found, changed: Changed, ok: bool, scale_back: bool
) -> tuple[int | None, list[str]]:
    """The count to scale back to (None: leave it), and the annotations to remove then.

    After a failure Odoo goes back to its count if this pull (or the stopped one it takes
    over from) scaled it down; one an earlier pull left at 0 on purpose stays at 0. After
    success, only --scale-back brings it up; otherwise the count stays noted, and only
    PULLING (this pull's lease) goes."""
    n = found.replicas
    if changed.scaled:
        if not ok or scale_back:
            return n, [ANNOTATION, PULLING]
        return None, [PULLING]
    if ok and scale_back and found.remembered:
        return n, [ANNOTATION, PULLING]
    return None, [ANNOTATION, PULLING] if changed.annotated else [PULLING]  # scale-down refused


def with_what_is_left(error: BaseException, problems: list[str]) -> CleanupFailed:
    """The one error line: what stopped the pull, then what is left to put back by hand."""
    left = "; ".join(problems)
    if isinstance(error, KeyboardInterrupt):
        return CleanupFailed(
            f"interrupted; no snapshot was written, but {left}", ExitCode.INTERRUPTED
        )
    text = str(error) if isinstance(error, ToolError) else f"{type(error).__name__}: {error}"
    code = error.exit_code if isinstance(error, ToolError) else ExitCode.FAILED
    return CleanupFailed(f"{text}; and {left}", code)


def put_back(
    cluster: Cluster,
    target: Target,
    helper: str | None,
    replicas: int | None,
    unannotate: list[str],
    say: Any,
    *,
    watch: bool = True,
) -> list[str]:
    """Delete the helper pod, scale back, then remove the annotations `unannotate`; each
    failure is one phrase with the command that finishes the job, and every step is tried.
    With `watch` (not after Ctrl-C), Odoo's pods, scaled back, are watched for a while:
    one that waits for its volume (Multi-Attach) is a problem, named."""
    ns, name = target.namespace, target.deployment
    problems = []
    scaled_back = False
    if helper is not None:
        try:
            cluster.delete_pod(ns, helper)
            say(f"deleted helper pod {ns}/{helper}")
        except Exception as e:  # reported; the scale-back must still run
            problems.append(
                f"the helper pod {ns}/{helper} was NOT deleted ({e}): "
                f"run `kubectl -n {ns} delete pod {helper}`"
            )
    changes: dict[str, str | None] = dict.fromkeys(unannotate)
    if replicas is not None:
        for attempt in range(CLEANUP_TRIES):  # the blip that failed the pull may pass
            try:
                cluster.scale(ns, name, replicas)
                say(f"scaled deployment {ns}/{name} back to {replicas}")
                scaled_back = True
                break
            except Exception as e:  # reported once, with the command that fixes it
                if attempt + 1 < CLEANUP_TRIES and not refused(e):
                    time.sleep(2**attempt)
                    continue
                problems.append(
                    f"deployment {ns}/{name} was NOT put back to {replicas} replicas ({e}): "
                    f"run `kubectl -n {ns} scale deployment {name} --replicas={replicas}`"
                )
                # The count stays noted for the next pull, and the lease says no pull owns
                # it now: the next one (on any host) takes over and puts the count back.
                changes = {PULLING: STOPPED} if PULLING in unannotate else {}
                break
    if changes:
        try:
            cluster.annotate(ns, name, changes)
        except Exception as e:  # harmless: a deployment above 0 is taken at its own count
            say(f"left the annotations {', '.join(changes)} on deployment {ns}/{name} ({e})")
    if scaled_back and replicas and watch:
        waits: list[str] = []
        with contextlib.suppress(KubeError):
            waits = cluster.volume_waits(ns, name, min(target.timeout, BACK_WAIT))
        if waits:
            problems.append(
                f"deployment {ns}/{name} was scaled back to {replicas} replicas, yet its pods "
                f"wait for their volume: {'; '.join(waits)} (another node still holds the "
                "ReadWriteOnce volume: it detaches once that node has unmounted it, at most "
                "6 minutes after a forced delete; `kubectl get volumeattachment` shows where "
                f"it is, `kubectl -n {ns} get pods` when they run)"
            )
    return problems

"""One provisioning run of one source: plan from the warehouse and the vendor, check the
safety rules, send, record. Knows no vendor: it talks to the source's
:class:`~lms_sync.connectors.base.Provisioner`.

Safety: deactivations are held (``provision.deactivations_held``) while a from_source is
*unknown* (see :func:`lms_sync.warehouse.provision.unknown_reason`): a half-failed HR
source must never make everyone a leaver. A plan that would deactivate more than
``max_deactivate_fraction`` of the vendor's active users sends nothing and fails
(``provision.refused``) unless forced. Users the vendor refuses (``failed[]``) are logged
one per line (``provision.user_failed``), counted, and come back in the next run's plan.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine

from lms_sync.config import Config, SourceConfig
from lms_sync.connectors import connector_class
from lms_sync.connectors.base import Provisioner
from lms_sync.errors import LmsSyncError
from lms_sync.logs import get_logger, one_line
from lms_sync.provision.plan import Plan, batches, make_plan, refusal, wanted_people
from lms_sync.warehouse import identity, retry, state
from lms_sync.warehouse import provision as store
from lms_sync.warehouse.dialect import LockBusy, source_lock

ACTIONS = ("create", "update", "deactivate")


@dataclass
class ProvisionResult:
    source_id: str
    run_id: str
    result: str = "succeeded"  # succeeded | failed | refused | skipped
    plan: Plan | None = None
    sent: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACTIONS, 0))
    failed: int = 0
    held_by: dict[str, str] = field(default_factory=dict)  # from_source -> why it is unknown
    error: str | None = None
    from_sources: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.result == "succeeded"


def from_sources(cfg: Config, source: SourceConfig) -> list[str]:
    """The sources whose learners define who should exist (default: every other enabled one)."""
    assert source.provision is not None
    return source.provision.from_sources or [
        s.id for s in cfg.sources.values() if s.enabled and s.id != source.id]


def run_provision(engine: Engine, cfg: Config, source: SourceConfig, *, dry_run: bool = False,
                  force: bool = False, stop: threading.Event | None = None) -> ProvisionResult:
    """Provision ``source`` once; never raises for the source's own failure."""
    result = ProvisionResult(source.id, str(uuid.uuid4()), from_sources=from_sources(cfg, source))
    log = get_logger("lms_sync.provision")
    with structlog.contextvars.bound_contextvars(run_id=result.run_id, source=source.id,
                                                 kind=source.kind, stream=store.STREAM):
        started, t0 = state.now_utc(), time.monotonic()
        try:
            with source_lock(engine, f"{source.id}:{store.STREAM}"):
                _locked(engine, cfg, source, result, dry_run, force, stop, log)
        except LockBusy as exc:
            result.result, result.error = "skipped", str(exc)
            log.warning("provision.skipped", reason=str(exc))
            return result
        except Exception as exc:  # noqa: BLE001 - recorded and reported, never a traceback
            result.result, result.error = "failed", one_line(exc)
            log.error("provision.failed", error_class=type(exc).__name__, error=result.error,
                      exc_info=not isinstance(exc, LmsSyncError))
        if not dry_run:
            _record(engine, source, result, started, log, cfg.warehouse.reconnect_seconds)
        log.info("provision.finished", result=result.result, dry_run=dry_run, **result.sent,
                 failed=result.failed, duration=round(time.monotonic() - t0, 3))
    return result


def _locked(engine: Engine, cfg: Config, source: SourceConfig, result: ProvisionResult,
            dry_run: bool, force: bool, stop: threading.Event | None,
            log: structlog.stdlib.BoundLogger) -> None:
    settings = source.provision
    assert settings is not None
    window = cfg.warehouse.reconnect_seconds
    accounts = retry.transaction(engine, lambda conn: store.accounts(conn, result.from_sources),
                                 window=window, op="provision.accounts")
    wanted, no_hr_id = wanted_people(accounts, result.from_sources, identity.normalize_hr_id)
    if settings.deactivate_leavers:  # else nothing is deactivated: no need to know
        streams = {sid: _learner_streams(cfg, sid) for sid in result.from_sources}
        reasons = retry.transaction(engine, lambda conn: {
            sid: store.unknown_reason(conn, sid, names) for sid, names in streams.items()},
            window=window, op="provision.unknown_sources")
        result.held_by = {sid: why for sid, why in reasons.items() if why}
    with connector_class(source.kind)(source, log) as connector:
        provisioner = connector.provisioner()
        assert provisioner is not None  # the config allows a provision block only then
        result.plan = plan = make_plan(wanted, provisioner.remote_users(), identity.normalize_hr_id,
                                       deactivate=settings.deactivate_leavers,
                                       hold=bool(result.held_by))
        plan.no_hr_id = no_hr_id
        _log_plan(plan, result, log)
        if _refused(plan, settings.max_deactivate_fraction, force, result, log) or dry_run:
            return
        _send(engine, source, provisioner, plan, result, stop, log, window)


def _log_plan(plan: Plan, result: ProvisionResult, log: structlog.stdlib.BoundLogger) -> None:
    for sid, why in result.held_by.items():
        log.warning("provision.deactivations_held", from_source=sid, reason=why,
                    held=len(plan.held))
    log.info("provision.planned", create=len(plan.create), update=len(plan.update),
             deactivate=len(plan.deactivate), held=len(plan.held), unchanged=plan.unchanged,
             untouched=plan.untouched, no_hr_id=plan.no_hr_id, active_users=plan.active_remote)


def _refused(plan: Plan, max_fraction: float, force: bool, result: ProvisionResult,
             log: structlog.stdlib.BoundLogger) -> bool:
    """The safety cap: True (and the result says why) if the plan must not be sent."""
    why = refusal(plan, max_fraction)
    if why and force:
        log.warning("provision.forced", reason=why)
    elif why:
        result.result, result.error = "refused", f"{why}; nothing was sent"
        log.error("provision.refused", reason=why)
        return True
    return False


def _learner_streams(cfg: Config, source_id: str) -> list[str]:
    """The source's streams whose full read soft-deletes learners: how a person leaves."""
    source = cfg.sources.get(source_id)
    if source is None:  # disabled, its settings unusable: nothing to ask it
        return []
    with connector_class(source.kind)(source, get_logger("lms_sync.provision")) as connector:
        return [s.name for s in connector.streams() if "learners" in s.full_refresh_tables]


def _send(engine: Engine, source: SourceConfig, provisioner: Provisioner, plan: Plan,
          result: ProvisionResult, stop: threading.Event | None,
          log: structlog.stdlib.BoundLogger, window: float) -> None:
    retry.transaction(engine, lambda conn: state.ensure_source(conn, source.id, source.kind),
                      window=window, op="ensure_source")
    work: list[tuple[str, Sequence[Any], Callable[[Sequence[Any]], dict[str, str]]]] = [
        ("create", plan.create, provisioner.upsert),
        ("update", [c.user for c in plan.update], provisioner.upsert),
        ("deactivate", plan.deactivate, provisioner.deactivate),
    ]
    for action, users, send in work:
        for batch in batches(users, provisioner.batch_limit):
            if stop is not None and stop.is_set():
                raise LmsSyncError("interrupted")
            refused = send(batch)
            outcomes = [(u.remote_id, refused.get(u.remote_id)) for u in batch]
            retry.transaction(engine, _actions_recorder(result.run_id, source.id, action, outcomes),
                              window=window, op="provision_actions")
            for rid, error in outcomes:
                if error:
                    log.warning("provision.user_failed", action=action, remote_id=rid, error=error)
            result.failed += len(refused)
            result.sent[action] += len(batch) - len(refused)
            log.info("provision.batch_sent", action=action, users=len(batch), failed=len(refused))


def _actions_recorder(run_id: str, source_id: str, action: str,
                      outcomes: list[tuple[str, str | None]]) -> Callable[[Any], None]:
    """One batch's ``provision_actions`` rows, written in the caller's transaction."""
    return lambda conn: store.insert_actions(conn, run_id, source_id, action, outcomes,
                                             state.now_utc())


def _record(engine: Engine, source: SourceConfig, result: ProvisionResult, started: Any,
            log: structlog.stdlib.BoundLogger, window: float) -> None:
    read = 0 if result.plan is None else result.plan.remote_users
    try:
        retry.call(lambda: store.record_run(
            engine, result.run_id, source.id, source.kind, started,
            result="succeeded" if result.ok else "failed", read=read,
            written=sum(result.sent.values()), failed=result.failed, error=result.error),
            engine=engine, window=window, op="provision_run")
    except Exception as exc:  # noqa: BLE001 - the log keeps what the warehouse could not
        log.error("run.unrecorded", result=result.result, error=result.error, cause=one_line(exc))
        if result.ok:
            result.result, result.error = "failed", f"the run was not recorded: {one_line(exc)}"

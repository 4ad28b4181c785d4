"""The service layer: what the CLI and the Dagster definitions call. They map arguments and present results;
every judgment and every database conversation lives below this module."""
from __future__ import annotations

import os
from typing import Optional

from dbguard_pipeline.errors import UsageError
from dbguard_pipeline.pg.dsn import ENV_DSN, parse_dsn


def resolve_dsn(dsn: Optional[str] = None, *, allow_demo: bool = True) -> str:
    """--dsn, else $DBGUARD_DATABASE_URL, else (when ``allow_demo``) the embedded demo database, loaded on first
    use. An empty --dsn or an empty $DBGUARD_DATABASE_URL is a usage error, never a silent fall-back: an unset
    variable in a script must not send migrations to another database."""
    if dsn is not None:
        if not dsn.strip():
            raise UsageError("--dsn is empty: give a database URL (or leave --dsn out)")
        parse_dsn(dsn)
        return dsn
    env = os.environ.get(ENV_DSN)
    if env is not None:
        if not env.strip():
            raise UsageError(f"${ENV_DSN} is set but empty: give a database URL (or unset it)")
        parse_dsn(env)
        return env
    if not allow_demo:
        raise UsageError(f"no database given: use --dsn URL or set ${ENV_DSN}")
    from dbguard_pipeline.demo import ensure_demo_database

    return ensure_demo_database()


# --- audit, probe, diff
from collections.abc import Iterable, Sequence  # noqa: E402  (kept in this block: see the integrator's note)
from typing import TYPE_CHECKING  # noqa: E402

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.diff.compare import SnapshotDiff
    from dbguard_pipeline.model.schema import Snapshot
    from dbguard_pipeline.probe.run import ProbeReport


def introspect(dsn: str, config: Optional[Config] = None, schemas: Optional[Iterable[str]] = None) -> Snapshot:
    """The schema snapshot of ``dsn`` (read-only transactions, the config's timeouts). ``schemas``: only these
    (None: every schema; the audit's scope is ``config.schemas or None``)."""
    from dbguard_pipeline.config import Config
    from dbguard_pipeline.pg.catalog import introspect as take_snapshot

    config = config or Config()
    return take_snapshot(dsn, schemas, statement_timeout_ms=config.statement_timeout_ms,
                         lock_timeout_ms=config.lock_timeout_ms)


def audit(dsn: str, config: Config, *, rules: Optional[Iterable[str]] = None, with_metrics: bool = True,
          snapshot: Optional[Snapshot] = None) -> AuditResult:
    """The whole audit (``dbguard validate``, ``dbguard demo``): snapshot, data metrics, rules, ignores."""
    from dbguard_pipeline.audit import run_audit

    return run_audit(dsn, config, rules=rules, with_metrics=with_metrics, snapshot=snapshot)


def static_audit(snapshot: Snapshot, config: Config) -> AuditResult:
    """The rules that read the schema alone, on a snapshot taken before (the ``rls_audit`` asset)."""
    from dbguard_pipeline.audit import static_audit as run

    return run(snapshot, config)


def data_audit(dsn: str, snapshot: Snapshot, config: Config) -> AuditResult:
    """One pass of data metrics and the data rules (the ``tenant_coverage`` and ``data_integrity`` assets)."""
    from dbguard_pipeline.audit import data_audit as run

    return run(dsn, snapshot, config)


def probe(dsn: str, config: Optional[Config] = None, tables: Optional[Sequence[str]] = None, *,
          snapshot: Optional[Snapshot] = None, tenants: Optional[Sequence[str]] = None) -> ProbeReport:
    """Cross-tenant reads and writes as the application role, always rolled back (``dbguard test-isolation``)."""
    from dbguard_pipeline.probe import probe as run

    return run(dsn, config, tables, snapshot=snapshot, tenants=tenants)


def diff(source: Snapshot, target: Snapshot, config: Optional[Config] = None, *, source_label: Optional[str] = None,
         target_label: Optional[str] = None, source_kind: str = "snapshot", target_kind: str = "snapshot"
         ) -> SnapshotDiff:
    """What changed from ``source`` to ``target``, what got weaker, new and resolved findings (``dbguard diff``).
    The labels are for people: never a DSN with a password."""
    from dbguard_pipeline.diff import diff_snapshots

    return diff_snapshots(source, target, config, source=source_label, target=target_label,
                          source_kind=source_kind, target_kind=target_kind)

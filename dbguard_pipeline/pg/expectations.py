"""Great Expectations suites declared in dbguard.yaml, run with SQL push-down against the database.

``config.expectations`` lists ``{table, type, kwargs, severity}``: ``type`` is a GX expectation class name
(``ExpectColumnValuesToNotBeNull``; the snake_case name ``expect_column_values_to_not_be_null`` works too).
The expectations of one table form one suite validated on one whole-table batch of a GX SQL (postgres)
datasource: GX's SqlAlchemy execution engine computes every metric in the database, no table is loaded into
pandas. The GX context is ephemeral (nothing is written to disk); its connections are READ ONLY with the
configured statement and lock timeouts; the password never enters the GX connection string.

The common types (not null, unique, in set, between, regex, row count, compound uniqueness) are evaluated by
dbguard itself in one SQL query per table (:mod:`dbguard_pipeline.pg.expectations_sql`), with GX's counts and
success rules; only what that translation does not recognise exactly goes to Great Expectations. Each result
names its ``engine``: ``dbguard`` or ``great_expectations``.

Great Expectations takes seconds to import: this module imports it only when an expectation needs it.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from dataclasses import dataclass, field
from typing import Any, Optional

from dbguard_pipeline.config import Config, Expectation
from dbguard_pipeline.errors import ConfigError
from dbguard_pipeline.model.schema import Snapshot
from dbguard_pipeline.pg.dsn import mask_secrets, parse_dsn
from dbguard_pipeline.text import raw_qualified

# What a result may carry into reports: counts and observed scalars, never sampled row values.
_KEEP = ("element_count", "unexpected_count", "unexpected_percent", "missing_count", "observed_value")


@dataclass(frozen=True)
class ExpectationResult:
    table: str  # "schema.table"
    type: str  # class name, e.g. ExpectColumnValuesToNotBeNull
    kwargs: dict = field(default_factory=dict, compare=False, hash=False)
    severity: str = "critical"
    success: Optional[bool] = None  # None: could not be evaluated (see error)
    observed: dict = field(default_factory=dict, compare=False, hash=False)
    error: Optional[str] = None
    object: str = ""  # stable name within the table: type(column), de-duplicated with #n
    engine: str = "great_expectations"  # what evaluated it: "dbguard" (one SQL query per table) or GX
    # the table's schema and name when it was found (a dot inside either makes ``table`` ambiguous)
    schema: str = field(default="", compare=False)
    name: str = field(default="", compare=False)

    @property
    def schema_name(self) -> str:
        return self.schema or self.table.split(".", 1)[0]

    @property
    def table_name(self) -> str:
        if self.name:
            return self.name
        return self.table.split(".", 1)[1] if "." in self.table else self.table


def class_name(type_: str) -> str:
    """ExpectColumnValuesToNotBeNull from either spelling."""
    if "_" in type_ or type_.islower():
        return "".join(part[:1].upper() + part[1:] for part in type_.split("_") if part)
    return type_


def _object_names(items: list[Expectation]) -> list[str]:
    names: list[str] = []
    seen: dict[tuple[str, str], int] = {}
    for e in items:
        col = e.kwargs.get("column")
        base = class_name(e.type) + (f"({col})" if isinstance(col, str) else "")
        key = (e.table, base)
        seen[key] = seen.get(key, 0) + 1
        names.append(base if seen[key] == 1 else f"{base}#{seen[key]}")
    return names


def _raised(info) -> Optional[str]:
    """The exception message of a result that could not be computed. GX gives either one
    ``{raised_exception, exception_message}`` dict or one such dict per metric."""
    if not isinstance(info, dict):
        return None
    if "raised_exception" in info:
        return (info.get("exception_message") or "error") if info.get("raised_exception") else None
    for value in info.values():
        msg = _raised(value)
        if msg is not None:
            return msg
    return None


def _key(e: Expectation) -> str:
    import json

    return class_name(e.type) + json.dumps(e.kwargs, sort_keys=True, default=str)


def _resolve_table(snapshot: Optional[Snapshot], name: str) -> tuple[Optional[str], Optional[str]]:
    """(schema, table) from "schema.table" (or a bare name, when unambiguous in the snapshot)."""
    from dbguard_pipeline.text import split_qualified

    if snapshot is not None:
        found = snapshot.table(raw_qualified(name))
        if found is not None:
            return found.schema, found.name
        return None, None
    return split_qualified(name)


def build_expectations(config: Config, only: Optional[set[int]] = None) -> list[Any]:
    """Instantiate the configured expectations (imports great_expectations); a bad type or bad kwargs raise
    a one-line ConfigError naming the entry. ``only``: the indexes to build (the others are None)."""
    try:
        import great_expectations as gx
    except ModuleNotFoundError:
        raise ConfigError(
            "the config declares expectations dbguard cannot run in SQL, and Great Expectations is not installed "
            '(pip install "dbguard-rls[gx]")'
        ) from None

    out: list[Any] = []
    for i, e in enumerate(config.expectations):
        if only is not None and i not in only:
            out.append(None)
            continue
        name = class_name(e.type)
        cls = getattr(gx.expectations, name, None)
        if not (isinstance(cls, type) and issubclass(cls, gx.expectations.Expectation)):
            raise ConfigError(f"expectations[{i}]: unknown Great Expectations expectation type {e.type!r}")
        try:
            out.append(cls(**e.kwargs))
        except Exception as exc:  # noqa: BLE001  (pydantic validation errors and others from GX)
            msg = " ".join(str(exc).split())
            raise ConfigError(f"expectations[{i}] ({name} on {e.table}): invalid kwargs: {msg[:300]}") from None
    return out


def _engine_args(dsn: str, config: Config) -> tuple[str, dict]:
    """A password-free SQLAlchemy URL that GX's Postgres datasource accepts, and psycopg2 connect_args that
    carry everything else (socket directory or host, port, password, TLS settings) plus READ ONLY and the
    timeouts as server options."""
    from urllib.parse import quote

    params = parse_dsn(dsn)
    user = params.pop("user", None) or "postgres"
    dbname = params.pop("dbname", None) or user
    url = f"postgresql+psycopg2://{quote(user, safe='')}@localhost/{quote(dbname, safe='')}"
    options = " ".join(
        filter(
            None,
            [
                params.pop("options", ""),
                "-c default_transaction_read_only=on",
                "-c row_security=off",
                f"-c statement_timeout={int(config.statement_timeout_ms)}",
                f"-c lock_timeout={int(config.lock_timeout_ms)}",
            ],
        )
    )
    connect_args: dict[str, Any] = dict(params)
    connect_args["options"] = options
    connect_args.setdefault("host", "localhost")
    connect_args.setdefault("application_name", "dbguard-expectations")
    connect_args.setdefault("connect_timeout", "10")
    return url, connect_args


def _run_sql(
    dsn: str, config: Config, snapshot: Snapshot, items: list[Expectation], objects: list[str], checks: dict[int, Any]
) -> dict[int, ExpectationResult]:
    """The expectations dbguard evaluates itself: one READ ONLY query per table, small tables read together
    (``UNION ALL``, as the data metrics read them; a group that fails is read again table by table)."""
    from dbguard_pipeline.pg.expectations_sql import outcome, table_query
    from dbguard_pipeline.pg.metrics import BATCH_ROWS, _run_units, _Runner

    by_table: dict[str, list[int]] = {}
    for i in checks:
        found = snapshot.table(raw_qualified(items[i].table))
        assert found is not None  # translate() admits only existing tables
        by_table.setdefault(found.qualified, []).append(i)
    tables = [snapshot.table(q) for q in by_table]
    results: dict[int, ExpectationResult] = {}
    runner = _Runner(dsn, config)
    try:
        rows = _run_units(
            runner,
            [
                lambda n, t=t, idxs=idxs: table_query(t, [checks[i] for i in idxs], n)
                for t, idxs in zip(tables, by_table.values(), strict=True)
            ],
            [(t is not None and 0 <= t.row_estimate < BATCH_ROWS, max(t.row_estimate if t else 0, 0)) for t in tables],
            "expectations: tables",
        )
    finally:
        runner.close()
    for table, idxs, (row, reason) in zip(tables, by_table.values(), rows, strict=True):
        assert table is not None
        values = list(row[0]) if row is not None else None
        for k, i in enumerate(idxs):
            e = items[i]
            base: dict[str, Any] = dict(
                table=table.qualified,
                schema=table.schema,
                name=table.name,
                type=class_name(e.type),
                kwargs=dict(e.kwargs),
                severity=e.severity,
                object=objects[i],
                engine="dbguard",
            )
            if values is None:
                results[i] = ExpectationResult(**base, error=reason)
                continue
            success, observed = outcome(checks[i], int(values[0]), values[1 + 2 * k], values[2 + 2 * k])
            results[i] = ExpectationResult(**base, success=success, observed=observed)
    return results


def run_expectations(
    dsn: str, config: Config, snapshot: Optional[Snapshot] = None, *, engine: str = "auto"
) -> tuple[ExpectationResult, ...]:
    """Validate every configured expectation. The common types in one SQL query per table (needs the snapshot),
    the others with Great Expectations, one suite and one batch per table. ``engine="gx"``: everything through
    Great Expectations (the comparison tests and the bench use it)."""
    if not config.expectations:
        return ()
    items = list(config.expectations)
    objects = _object_names(items)
    checks: dict[int, Any] = {}
    if snapshot is not None and engine != "gx":
        from dbguard_pipeline.pg.expectations_sql import translate

        for i, e in enumerate(items):
            check = translate(class_name(e.type), e, snapshot.table(raw_qualified(e.table)))
            if check is not None:
                checks[i] = check
    rest = [i for i in range(len(items)) if i not in checks]
    results: dict[int, ExpectationResult] = {}
    if rest:
        results.update(_run_gx(dsn, config, snapshot, items, objects, rest))
    if checks:
        assert snapshot is not None
        results.update(_run_sql(dsn, config, snapshot, items, objects, checks))
    return tuple(results[i] for i in range(len(items)))


def _matching(ordered: list, pos: int, built: Any, e: Expectation) -> Any:
    """The validation result of one expectation: GX keeps the suite's order except when it does not (it may
    reorder), so the result at the expected position is checked and otherwise looked up by type and kwargs."""

    def same(r: Any) -> bool:
        cfg = r.expectation_config
        return (
            cfg is not None
            and cfg.type == built.expectation_type
            and all(cfg.kwargs.get(k) == v for k, v in e.kwargs.items())
        )

    if pos < len(ordered) and same(ordered[pos]):
        return ordered[pos]
    return next((r for r in ordered if same(r)), None)


def _run_gx(
    dsn: str,
    config: Config,
    snapshot: Optional[Snapshot],
    items: list[Expectation],
    objects: list[str],
    todo: list[int],
) -> dict[int, ExpectationResult]:
    built = build_expectations(config, set(todo))

    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig
    from sqlalchemy import quoted_name

    def clean(text: object) -> str:
        return mask_secrets(" ".join(str(text).split()), dsn)[:500]

    groups: dict[tuple[Optional[str], Optional[str], str], list[int]] = {}
    for i in todo:
        e = items[i]
        schema, table = _resolve_table(snapshot, e.table)
        groups.setdefault((schema, table, e.table), []).append(i)

    results: dict[int, ExpectationResult] = {}

    def result(i: int, schema: Optional[str], table: Optional[str], **kw) -> ExpectationResult:
        e = items[i]
        qualified = f"{schema}.{table}" if schema and table else e.table
        return ExpectationResult(
            table=qualified,
            schema=schema or "",
            name=table or "",
            type=class_name(e.type),
            kwargs=dict(e.kwargs),
            severity=e.severity,
            object=objects[i],
            **kw,
        )

    url, connect_args = _engine_args(dsn, config)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        datasource = context.data_sources.add_postgres(  # type: ignore[call-arg]  # SQLAlchemy's kwargs
            "dbguard", connection_string=url, kwargs={"connect_args": connect_args}
        )
        try:
            for n, ((schema, table, raw), idxs) in enumerate(sorted(groups.items(), key=lambda kv: kv[1][0])):
                if schema is None or table is None:
                    for i in idxs:
                        results[i] = result(i, None, None, error=f"table {raw} does not exist")
                    continue
                try:
                    asset = datasource.add_table_asset(
                        f"t{n}", table_name=quoted_name(table, True), schema_name=quoted_name(schema, True)
                    )
                    batch = asset.add_batch_definition_whole_table("whole_table").get_batch()
                    suite = gx.ExpectationSuite(name=f"dbguard_{n}")
                    position: dict[int, int] = {}  # config index -> position in the suite (GX de-duplicates)
                    keys: list[str] = []
                    for i in idxs:
                        key = _key(items[i])
                        if key not in keys:
                            keys.append(key)
                            suite.add_expectation(built[i])
                        position[i] = keys.index(key)
                    validation = batch.validate(suite, result_format="BASIC")
                except Exception as exc:  # noqa: BLE001  (connection, permission, missing table: GX raises many kinds)
                    reason = clean(getattr(exc, "orig", None) or exc)
                    reason = re.sub(r"^Attempt to connect to table: .*? failed because ", "", reason)
                    for i in idxs:
                        results[i] = result(i, schema, table, error=reason)
                    continue
                ordered = list(validation.results)
                for i in idxs:
                    r = _matching(ordered, position[i], built[i], items[i])
                    if r is None:
                        results[i] = result(i, schema, table, error="no result from Great Expectations")
                        continue
                    raised = _raised(r.exception_info)
                    if raised is not None:
                        results[i] = result(i, schema, table, error=clean(raised))
                        continue
                    observed = {
                        k: v
                        for k, v in (r.result or {}).items()
                        if k in _KEEP and (v is None or isinstance(v, (int, float, str, bool)))
                    }
                    results[i] = result(i, schema, table, success=bool(r.success), observed=observed)
        finally:
            with contextlib.suppress(Exception):  # cleanup of an ephemeral context: best effort
                context.data_sources.delete("dbguard")
    return results

"""The common Great Expectations expectation types, evaluated by dbguard in one SQL query per table.

Declared in dbguard.yaml like any GX expectation; when the type and its kwargs are among those below, dbguard
computes the same counts GX's SqlAlchemy engine computes (``element_count``, ``unexpected_count``,
``unexpected_percent``, ``missing_count``, ``observed_value``) and decides success with GX's rules (``mostly``
over the non-missing rows; an empty table passes a column expectation vacuously). Everything of one table is one
statement: the row count and every per-expectation count as ``count(*) FILTER (WHERE ...)`` in one scan, with one
grouped sub-scan per uniqueness expectation. Whatever is not recognised exactly (another type, another kwarg, a
column that does not exist or has a type the translation is not sure of) is left to Great Expectations, so the
results never differ: ``dbguard_tests/test_perf_expectations.py`` runs one suite through both and compares them.

Read only, like the metrics: each statement in its own READ ONLY transaction with the configured timeouts and
``row_security = off``. The values a user writes (value sets, bounds, regexes) are bound parameters, identifiers
go through ``sql.Identifier``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Optional

from psycopg import sql

from dbguard_pipeline.config import Expectation
from dbguard_pipeline.model.schema import Table

_NUMERIC = ("smallint", "integer", "bigint", "numeric", "real", "double precision")
_TEXT = ("text", "character varying", "character", "citext", "name")

# type -> (required kwargs, optional kwargs); "mostly" is optional for every column-map type
_KINDS: dict[str, tuple[frozenset, frozenset]] = {
    "ExpectColumnValuesToNotBeNull": (frozenset({"column"}), frozenset({"mostly"})),
    "ExpectColumnValuesToBeUnique": (frozenset({"column"}), frozenset({"mostly"})),
    "ExpectColumnValuesToBeInSet": (frozenset({"column", "value_set"}), frozenset({"mostly"})),
    "ExpectColumnValuesToBeBetween": (
        frozenset({"column"}),
        frozenset({"mostly", "min_value", "max_value", "strict_min", "strict_max"}),
    ),
    "ExpectColumnValuesToMatchRegex": (frozenset({"column", "regex"}), frozenset({"mostly"})),
    "ExpectTableRowCountToBeBetween": (frozenset(), frozenset({"min_value", "max_value"})),
    "ExpectCompoundColumnsToBeUnique": (frozenset({"column_list"}), frozenset({"mostly", "ignore_row_if"})),
}
SQL_TYPES = tuple(_KINDS)


def _number(v: Any) -> bool:
    return type(v) in (int, float) and v == v and v not in (float("inf"), float("-inf"))


def _base_type(type_text: str) -> str:
    return type_text.split("(", 1)[0].strip()


@dataclass(frozen=True)
class SqlCheck:
    """One expectation translated: ``cond`` marks an unexpected row (NULL-safe), ``nonnull`` a row it considers."""

    kind: str
    kwargs: dict
    column: Optional[str] = None
    columns: tuple[str, ...] = ()


def translate(type_name: str, e: Expectation, table: Optional[Table]) -> Optional[SqlCheck]:
    """The SQL form of an expectation, or None when Great Expectations must evaluate it."""
    spec = _KINDS.get(type_name)
    if spec is None or table is None:
        return None
    required, optional = spec
    kw = e.kwargs
    if not required <= set(kw) or not set(kw) <= required | optional:
        return None
    if "mostly" in kw and not (_number(kw["mostly"]) and 0 <= kw["mostly"] <= 1):
        return None
    if type_name == "ExpectTableRowCountToBeBetween":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        if (lo is None and hi is None) or any(v is not None and type(v) is not int for v in (lo, hi)):
            return None
        if lo is not None and hi is not None and lo > hi:  # GX's own validation words that error
            return None
        return SqlCheck(type_name, dict(kw))
    if type_name == "ExpectCompoundColumnsToBeUnique":
        cols = kw["column_list"]
        if (
            type(cols) not in (list, tuple)
            or len(cols) < 2
            or any(type(c) is not str for c in cols)
            or len(set(cols)) != len(cols)
            or any(table.column(c) is None for c in cols)
            or kw.get("ignore_row_if", "all_values_are_missing") != "all_values_are_missing"
        ):
            return None
        return SqlCheck(type_name, dict(kw), columns=tuple(cols))
    col = kw["column"]
    column = table.column(col) if type(col) is str else None
    if column is None:
        return None
    base = _base_type(column.type)
    if type_name == "ExpectColumnValuesToBeInSet":
        values = kw["value_set"]
        if type(values) not in (list, tuple) or not values:
            return None
        if all(type(v) is str for v in values):
            if base not in _TEXT:
                return None
        elif not (all(_number(v) for v in values) and base in _NUMERIC):
            return None
    elif type_name == "ExpectColumnValuesToBeBetween":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        if (lo is None and hi is None) or base not in _NUMERIC:
            return None
        if any(v is not None and not _number(v) for v in (lo, hi)):
            return None
        if lo is not None and hi is not None and lo > hi:
            return None
        if any(type(kw.get(k, False)) is not bool for k in ("strict_min", "strict_max")):
            return None
    elif type_name == "ExpectColumnValuesToMatchRegex":
        if type(kw["regex"]) is not str or base not in _TEXT:
            return None
    return SqlCheck(type_name, dict(kw), column=col)


def _unexpected(check: SqlCheck, table_ref: sql.Composable) -> sql.Composable:
    """An expression counting the unexpected rows of one check (an aggregate over the table's scan)."""
    kw = check.kwargs
    if check.kind == "ExpectColumnValuesToBeUnique":
        col = sql.Identifier(check.column or "")
        return sql.SQL(
            "(select coalesce(sum(d.n), 0)::bigint from (select count(*) as n from {t} where {c} is not null"
            " group by {c} having count(*) > 1) d)"
        ).format(t=table_ref, c=col)
    if check.kind == "ExpectCompoundColumnsToBeUnique":
        cols = [sql.Identifier(c) for c in check.columns]
        # GX joins each row to its group's count with "=", so a row with a NULL in any column never counts
        return sql.SQL(
            "(select coalesce(sum(d.n), 0)::bigint from (select count(*) as n from {t} where {none_null}"
            " group by {cols} having count(*) > 1) d)"
        ).format(
            t=table_ref,
            cols=sql.SQL(", ").join(cols),
            none_null=sql.SQL(" and ").join(sql.SQL("{} is not null").format(c) for c in cols),
        )
    col = sql.Identifier(check.column or "")
    if check.kind == "ExpectColumnValuesToNotBeNull":
        cond = sql.SQL("{} is null").format(col)
    elif check.kind == "ExpectColumnValuesToBeInSet":
        cond = sql.SQL("{c} is not null and not ({c} in ({vals}))").format(
            c=col, vals=sql.SQL(", ").join(sql.Literal(v) for v in kw["value_set"])
        )
    elif check.kind == "ExpectColumnValuesToBeBetween":
        parts = []
        if kw.get("min_value") is not None:
            op = ">" if kw.get("strict_min") else ">="
            parts.append(sql.SQL("{} " + op + " {}").format(col, sql.Literal(kw["min_value"])))
        if kw.get("max_value") is not None:
            op = "<" if kw.get("strict_max") else "<="
            parts.append(sql.SQL("{} " + op + " {}").format(col, sql.Literal(kw["max_value"])))
        cond = sql.SQL("{c} is not null and not ({ok})").format(c=col, ok=sql.SQL(" and ").join(parts))
    elif check.kind == "ExpectColumnValuesToMatchRegex":
        cond = sql.SQL("{c} is not null and not ({c} operator(pg_catalog.~) {r})").format(
            c=col, r=sql.Literal(kw["regex"])
        )
    else:  # pragma: no cover - translate() admits nothing else
        raise AssertionError(check.kind)
    return sql.SQL("count(*) filter (where {})").format(cond)


def _missing(check: SqlCheck) -> Optional[sql.Composable]:
    """Rows the check does not consider (NULLs); None when GX reports no missing_count for the type."""
    if check.kind in ("ExpectColumnValuesToNotBeNull", "ExpectTableRowCountToBeBetween"):
        return None
    if check.kind == "ExpectCompoundColumnsToBeUnique":
        return sql.SQL("count(*) filter (where {})").format(
            sql.SQL(" and ").join(sql.SQL("{} is null").format(sql.Identifier(c)) for c in check.columns)
        )
    return sql.SQL("count(*) filter (where {} is null)").format(sql.Identifier(check.column or ""))


def table_query(table: Table, checks: list[SqlCheck], index: Optional[int] = None) -> sql.Composable:
    """One statement for all of a table's checks: ``n, (unexpected_i, missing_i)...``; with ``index``,
    ``index, ARRAY[n, (unexpected_i, missing_i)...]::bigint[]`` (one shape for every table: small tables are
    read together, ``UNION ALL``, as the data metrics read them)."""
    ref = sql.SQL("{}.{}").format(sql.Identifier(table.schema), sql.Identifier(table.name))
    cols: list[sql.Composable] = [sql.SQL("count(*)")]
    for c in checks:
        if c.kind == "ExpectTableRowCountToBeBetween":
            cols += [sql.SQL("null"), sql.SQL("null")]
            continue
        missing = _missing(c)
        cols += [_unexpected(c, ref), missing if missing is not None else sql.SQL("null")]
    if index is not None:
        return sql.SQL("select {}::int, array[{}]::bigint[] from {}").format(
            sql.Literal(index), sql.SQL(", ").join(cols), ref
        )
    return sql.SQL("select {} from {}").format(sql.SQL(", ").join(cols), ref)


def _mostly_success(considered: int, unexpected: int, mostly: float) -> bool:
    return (float(considered) - float(unexpected)) / float(considered) >= mostly


def outcome(check: SqlCheck, n: int, count: Optional[int], missing: Optional[int]) -> tuple[bool, dict]:
    """(success, observed) exactly as Great Expectations words them for the BASIC result format."""
    kw = check.kwargs
    unexpected = count or 0
    if check.kind == "ExpectTableRowCountToBeBetween":
        lo, hi = kw.get("min_value"), kw.get("max_value")
        return (lo is None or n >= lo) and (hi is None or n <= hi), {"observed_value": n}
    mostly = kw.get("mostly", 1)
    if check.kind == "ExpectColumnValuesToNotBeNull":
        if n == 0:
            return True, {"element_count": 0, "unexpected_count": None, "unexpected_percent": None}
        return _mostly_success(n, unexpected, mostly), {
            "element_count": n,
            "unexpected_count": unexpected,
            "unexpected_percent": unexpected / n * 100,
        }
    considered = n - (missing or 0)
    success = True if n == 0 or considered == 0 else _mostly_success(considered, unexpected, mostly)
    percent = unexpected / considered * 100 if n > 0 and considered > 0 else None
    # GX's condition metrics give no count on an empty table (its uniqueness ones give 0)
    empty_none = n == 0 and check.kind not in ("ExpectColumnValuesToBeUnique", "ExpectCompoundColumnsToBeUnique")
    return success, {
        "element_count": n,
        "unexpected_count": None if empty_none else unexpected,
        "unexpected_percent": percent,
        "missing_count": missing,
    }

"""Baselines: accept today's findings, fail only on new ones (``validate --baseline FILE``).

A baseline is a set of finding cache keys (``rule:schema.table[:object]``, stable across runs). It is read
from a file written by ``validate --write-baseline FILE``, from a json report (``validate --format json``) or
from a SARIF report (``--format sarif``); findings whose key it holds move to ``ignored`` (counted, listed,
never failing), the others are new and judged by ``--fail-on`` as usual.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dbguard_pipeline.errors import ConfigError
from dbguard_pipeline.report.json import dumps

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

BASELINE_FORMAT = 1


@dataclass(frozen=True)
class BaselineOutcome:
    result: AuditResult  # baselined findings moved to ``ignored``
    accepted: int  # findings the baseline accepted
    gone: tuple[str, ...]  # baseline keys of rules that ran and found nothing there now (fixed)


def render_baseline(result: AuditResult) -> str:
    """The baseline file: every current finding (and every ignored one), sorted, no clock time, so that
    re-writing an unchanged baseline gives the same bytes."""
    rows = sorted(
        {(f.cache_key, f.rule, f.severity.value) for f in (*result.findings, *result.ignored)},
    )
    return dumps(
        {
            "dbguard_baseline": BASELINE_FORMAT,
            "database": result.database,
            "findings": [{"cache_key": k, "rule": r, "severity": s} for k, r, s in rows],
        }
    )


def _keys_from(data: Any, path: Path) -> frozenset[str]:
    if isinstance(data, dict) and "dbguard_baseline" in data:
        if data["dbguard_baseline"] != BASELINE_FORMAT:
            raise ConfigError(f"baseline {path}: format {data['dbguard_baseline']!r} is not one this dbguard reads")
        rows = data.get("findings")
    elif isinstance(data, dict) and "runs" in data and isinstance(data["runs"], list):  # SARIF
        rows = [
            (r.get("properties") or {})
            for run in data["runs"]
            if isinstance(run, dict)
            for r in run.get("results") or ()
            if isinstance(r, dict)
        ]
    elif isinstance(data, dict) and "findings" in data and "summary" in data:  # a json report
        rows = list(data.get("findings") or ()) + list(data.get("ignored") or ())
    else:
        raise ConfigError(
            f"baseline {path} is neither a baseline (--write-baseline) nor a dbguard json or sarif report"
        )
    if not isinstance(rows, list):
        raise ConfigError(f"baseline {path}: findings must be a list")
    keys = set()
    for row in rows:
        key = row.get("cache_key") if isinstance(row, dict) else None
        if not isinstance(key, str) or not key:
            raise ConfigError(f"baseline {path}: a finding without a cache_key")
        keys.add(key)
    return frozenset(keys)


def load_baseline(path: str) -> frozenset[str]:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"baseline file not found: {p}") from None
    except IsADirectoryError:
        raise ConfigError(f"baseline {p} is a directory") from None
    except UnicodeDecodeError:
        raise ConfigError(f"baseline {p} is not UTF-8 text") from None
    except OSError as exc:
        raise ConfigError(f"cannot read baseline {p}: {exc.strerror or exc}") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(f"baseline {p} is not valid JSON: {exc.msg} at line {exc.lineno}") from None
    return _keys_from(data, p)


def apply_baseline(result: AuditResult, keys: frozenset[str]) -> BaselineOutcome:
    accepted = tuple(f for f in result.findings if f.cache_key in keys)
    new = tuple(f for f in result.findings if f.cache_key not in keys)
    seen = {f.cache_key for f in (*result.findings, *result.ignored)}
    ran = set(result.rules_run)
    return BaselineOutcome(
        result=dataclasses.replace(result, findings=new, ignored=(*result.ignored, *accepted)),
        accepted=len(accepted),
        gone=tuple(sorted(k for k in keys - seen if k.split(":", 1)[0] in ran)),
    )

"""The SARIF report (GitHub code scanning): SARIF 2.1.0, one run, the rules that ran in ``tool.driver.rules``
with their help text, one result per finding with a logical ("schema.table") and a physical location;
tables that could not be measured are tool execution notifications."""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING, Any, Optional
from urllib.parse import quote

from dbguard_pipeline import INFORMATION_URI, RULES_DOC_URL, __version__
from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.text import one_line

if TYPE_CHECKING:
    from dbguard_pipeline.audit.run import AuditResult

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_LEVEL = {Severity.CRITICAL: "error", Severity.WARNING: "warning", Severity.INFO: "note"}
_SECURITY_SEVERITY = {Severity.CRITICAL: "9.0", Severity.WARNING: "5.0", Severity.INFO: "2.0"}


def rule_doc_url(rule_id: str) -> str:
    """The rule's documentation on the project's site (its "## rule_id" section of docs/rules.md)."""
    return f"{RULES_DOC_URL}#{rule_id}"


def _artifact_uri(database: str, schema: str, table: str) -> str:
    return "/".join(quote(p, safe="") for p in ("postgresql", database, schema, table))


def _location(database: str, schema: str, table: str, obj: Optional[str] = None) -> dict[str, Any]:
    logical = [{"name": table, "fullyQualifiedName": f"{schema}.{table}", "kind": "resource"}]
    if obj:
        logical.append({"name": obj, "fullyQualifiedName": f"{schema}.{table}.{obj}", "kind": "member"})
    return {
        "physicalLocation": {
            "artifactLocation": {"uri": _artifact_uri(database, schema, table)},
            "region": {"startLine": 1},
        },
        "logicalLocations": logical,
    }


def _rule(rid: str) -> dict[str, Any]:
    from dbguard_pipeline.rules import REGISTRY

    spec = REGISTRY.get(rid)
    sev = spec.severity if spec else Severity.WARNING
    title = spec.title if spec else rid
    desc = (spec.description if spec else "") or title
    tags = ["security"]
    category = spec.category if spec else "dbguard"
    if category not in tags:  # SARIF tags are a set: "security" rules must not repeat it
        tags.append(category)
    return {
        "id": rid,
        "name": "".join(p.capitalize() for p in rid.split("_")),
        "shortDescription": {"text": title},
        "fullDescription": {"text": desc},
        "help": {
            "text": f"{desc}\nSee {rule_doc_url(rid)} for how to fix it.",
            "markdown": f"**{title}**\n\n{desc}\n\nSee [{rid}]({rule_doc_url(rid)}) for how to fix it.",
        },
        "helpUri": rule_doc_url(rid),
        "defaultConfiguration": {"level": _LEVEL[sev]},
        "properties": {
            "tags": tags,
            "security-severity": _SECURITY_SEVERITY[sev],
            "precision": "high",
        },
    }


def _result(f: Finding, rule_index: int, database: str) -> dict[str, Any]:
    message = one_line(f.message)
    return {
        "ruleId": f.rule,
        "ruleIndex": rule_index,
        "level": _LEVEL[f.severity],
        "message": {"text": f"{message}\nFix: {one_line(f.remediation)}" if f.remediation else message},
        "locations": [_location(database, f.schema, f.table, f.object)],
        "partialFingerprints": {"dbguardCacheKey/v1": hashlib.sha256(f.cache_key.encode()).hexdigest()},
        "properties": {
            "cache_key": f.cache_key,
            "severity": f.severity.value,
            "category": f.category,
            "object": f.object,
        },
    }


def to_sarif(result: AuditResult) -> dict[str, Any]:
    rule_ids = sorted(set(result.rules_run) | {f.rule for f in result.findings})
    index = {rid: i for i, rid in enumerate(rule_ids)}
    notifications = []
    for table, reason in result.not_measured:
        schema, _, name = table.partition(".")
        notifications.append(
            {
                "level": "warning",
                "message": {"text": f"{table} was not measured: {one_line(reason)}"},
                "locations": [_location(result.database, schema, name or schema)],
            }
        )
    return {
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "dbguard",
                        "version": __version__,
                        "semanticVersion": __version__,
                        "informationUri": INFORMATION_URI,
                        "rules": [_rule(rid) for rid in rule_ids],
                    }
                },
                "automationDetails": {"id": f"dbguard/{result.database}/"},
                "invocations": [
                    {
                        "executionSuccessful": True,
                        "endTimeUtc": result.generated_at,
                        "toolExecutionNotifications": notifications,
                    }
                ],
                "results": [_result(f, index[f.rule], result.database) for f in result.findings],
                "properties": {
                    "database": result.database,
                    "ignored": len(result.ignored),
                    "summary": result.summary(),
                },
            }
        ],
    }

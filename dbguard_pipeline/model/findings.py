"""Findings: what a rule reports, with its stable cache key."""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Optional


class Severity(str, enum.Enum):
    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"critical": 3, "warning": 2, "info": 1}[self.value]


@dataclass(frozen=True)
class Finding:
    rule: str  # stable id, e.g. "weak_rls_policy"
    severity: Severity
    category: str  # "rls" | "tenancy" | "integrity" | "performance" | "security" | "expectations"
    schema: str
    table: str
    message: str
    remediation: str  # what to run to fix it
    object: Optional[str] = None  # policy, index, constraint or column name
    detail: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    @property
    def cache_key(self) -> str:
        key = f"{self.rule}:{self.schema}.{self.table}"
        return f"{key}:{self.object}" if self.object else key

    def to_dict(self, *, detail: bool = True) -> dict[str, Any]:
        """The one JSON form of a finding (the audit's json report leaves out ``detail``)."""
        out: dict[str, Any] = {
            "rule": self.rule,
            "severity": self.severity.value,
            "category": self.category,
            "schema": self.schema,
            "table": self.table,
            "object": self.object,
            "message": self.message,
            "cache_key": self.cache_key,
            "remediation": self.remediation,
        }
        if detail:
            out["detail"] = self.detail
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Finding":
        return cls(
            rule=d["rule"], severity=Severity(d["severity"]), category=d["category"],
            schema=d["schema"], table=d["table"], message=d["message"],
            remediation=d.get("remediation", ""), object=d.get("object"), detail=d.get("detail") or {},
        )

"""Loading and running the rule case files (cases/<rule_id>.yaml).

A case file::

    rule: weak_rls_policy            # the rule it tests (the file name is the rule id too)
    cases:                           # setups with the exact set of cache keys the rule must report
      - name: using_true             # unique in the file; the test id is <rule>/<name>
        setup: |                     # SQL run in a fresh database after the Supabase shim (always) and BASE
          CREATE POLICY p ON public.t_true FOR SELECT USING (true);
        tenant_tables: [t_true]      # optional: standard tenant tables created before the setup
        base: true                   # optional (default true): BASE (tenants, user_tenants) first
        config: {tenant: {app_role: app}}   # optional: dbguard.yaml keys, validated by Config
        metrics: true                # optional: measure the data (always for needs_metrics rules)
        expect:                      # the exact set of this rule's cache keys
          - weak_rls_policy:public.t_true:p
        findings:                    # optional: more about single findings, by cache key
          weak_rls_policy:public.t_true:p:
            remediation: dbguard generate-migration fix-rls-policy public.t_true
            message_contains: [always true]
            detail: {always_true: true}
        fix: true                    # optional: apply the generated fix migrations, then expect no finding
        as_app:                      # optional: statements run as the config's app role (rolled back each),
          - sql: SELECT * FROM public.t_true   # with the SQLSTATE PostgreSQL must raise (null: it succeeds):
            sqlstate: null                     # what the finding claims, checked on the real server
    negatives:                       # setups that must produce no finding of the rule (expect: [])
      - name: pinned
        setup: ...

In setup SQL, ``$CTX`` stands for the tenant context of the default config,
``(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

CASES_DIR = Path(__file__).resolve().parent / "cases"
SHIM = (Path(__file__).resolve().parents[2] / "dbguard_pipeline" / "demo" / "supabase_shim.sql").read_text()
CTX = "(select nullif(current_setting('app.current_tenant_id', true), '')::uuid)"
BASE = f"""
CREATE TABLE public.tenants (id uuid PRIMARY KEY, name text NOT NULL);
ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY tenants_own ON public.tenants FOR SELECT TO authenticated USING (id = {CTX});
CREATE TABLE public.user_tenants (user_id uuid NOT NULL, tenant_id uuid NOT NULL REFERENCES public.tenants,
                                  PRIMARY KEY (tenant_id, user_id));
CREATE INDEX ON public.user_tenants (user_id);
ALTER TABLE public.user_tenants ENABLE ROW LEVEL SECURITY;
CREATE POLICY ut_own ON public.user_tenants FOR SELECT TO authenticated USING (user_id = (select auth.uid()));
"""

FILE_KEYS = {"rule", "cases", "negatives"}
CASE_KEYS = {"name", "setup", "tenant_tables", "base", "config", "metrics", "expect", "findings", "fix", "as_app"}
AS_APP_KEYS = {"sql", "sqlstate"}
FINDING_KEYS = {"remediation", "message_contains", "detail", "severity"}


def tenant_table(name: str, schema: str = "public") -> str:
    """A table with the tenant column (NOT NULL, foreign key, index) and RLS enabled, no policy."""
    return (f"CREATE TABLE {schema}.{name} (id uuid PRIMARY KEY, tenant_id uuid NOT NULL REFERENCES public.tenants, "
            f"owner_id uuid, parent_id uuid);\nCREATE INDEX ON {schema}.{name} (tenant_id);\n"
            f"ALTER TABLE {schema}.{name} ENABLE ROW LEVEL SECURITY;\n")


@dataclass(frozen=True)
class Case:
    rule: str
    name: str
    setup: str
    expect: frozenset[str]
    negative: bool = False
    config: dict[str, Any] = field(default_factory=dict)
    metrics: bool = False
    findings: dict[str, dict[str, Any]] = field(default_factory=dict)
    fix: bool = False
    as_app: tuple[tuple[str, Optional[str]], ...] = ()  # (statement, expected SQLSTATE or None)

    @property
    def id(self) -> str:
        return f"{self.rule}/{self.name}"


def _case(rule: str, raw: dict[str, Any], *, negative: bool, where: str) -> Case:
    unknown = set(raw) - CASE_KEYS
    if unknown:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)} (known: {sorted(CASE_KEYS)})")
    if "name" not in raw or "setup" not in raw:
        raise ValueError(f"{where}: a case needs a name and a setup")
    if negative and raw.get("expect"):
        raise ValueError(f"{where}: a negative expects nothing")
    if "expect" not in raw and not negative:
        raise ValueError(f"{where}: a case lists the cache keys it expects (expect: [] for none)")
    for key, extra in (raw.get("findings") or {}).items():
        if key not in (raw.get("expect") or ()):
            raise ValueError(f"{where}: findings names {key}, which the case does not expect")
        if set(extra) - FINDING_KEYS:
            raise ValueError(f"{where}: unknown keys {sorted(set(extra) - FINDING_KEYS)} for {key}")
    as_app = []
    for st in raw.get("as_app") or ():
        if not isinstance(st, dict) or set(st) - AS_APP_KEYS or "sql" not in st:
            raise ValueError(f"{where}: an as_app entry has keys {sorted(AS_APP_KEYS)} (sql required)")
        as_app.append((str(st["sql"]), None if st.get("sqlstate") is None else str(st["sqlstate"])))
    sql = "".join(tenant_table(t) for t in raw.get("tenant_tables") or ()) + raw["setup"]
    sql = (SHIM + (BASE if raw.get("base", True) else "") + sql).replace("$CTX", CTX)
    return Case(rule=rule, name=str(raw["name"]), setup=sql, expect=frozenset(raw.get("expect") or ()),
                negative=negative, config=dict(raw.get("config") or {}), metrics=bool(raw.get("metrics")),
                findings=dict(raw.get("findings") or {}), fix=bool(raw.get("fix")), as_app=tuple(as_app))


def load_file(path: Path) -> tuple[str, list[Case]]:
    """The rule a case file names and its cases (validated: unknown keys and duplicate names are errors)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict) or set(data) - FILE_KEYS or "rule" not in data:
        raise ValueError(f"{path.name}: a case file has keys {sorted(FILE_KEYS)}, and names its rule")
    rule = str(data["rule"])
    if path.stem != rule:
        raise ValueError(f"{path.name}: the file name is the rule id ({rule})")
    cases = [_case(rule, c, negative=False, where=f"{path.name} case {i}") for i, c in enumerate(data.get("cases") or ())]
    cases += [_case(rule, c, negative=True, where=f"{path.name} negative {i}")
              for i, c in enumerate(data.get("negatives") or ())]
    names = [c.name for c in cases]
    if len(names) != len(set(names)):
        raise ValueError(f"{path.name}: case names repeat")
    return rule, cases


def case_files() -> list[Path]:
    return sorted(CASES_DIR.glob("*.yaml"))


def all_cases() -> list[Case]:
    return [c for path in case_files() for c in load_file(path)[1]]


def only_keys(findings: Any, rule: Optional[str] = None) -> set[str]:
    return {f.cache_key for f in findings if rule is None or f.rule == rule}

"""Without a primary key rows cannot be addressed reliably: logical replication cannot replicate updates and
deletes, and tools (and dbguard's fixes) cannot update rows one by one.

*What it checks.* Every audited table without a primary key. The remediation promotes a valid, non-partial
unique index on NOT NULL columns when the table has one.

*Why it matters.* Rows cannot be addressed reliably: logical replication (and Supabase Realtime) cannot
replicate updates and deletes, tools cannot edit rows one by one, duplicates creep in.

*How to fix.* Promote an existing unique index on NOT NULL columns, or add an identity column.

```sql
-- bad
CREATE TABLE public.events (tenant_id uuid NOT NULL, at timestamptz NOT NULL, payload jsonb);
-- fix
ALTER TABLE public.events ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;
```
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Optional

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Index, Table
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.semantics.indexes import usable
from dbguard_pipeline.text import ident, qname

SPEC = RuleSpec("no_primary_key", Severity.INFO, "performance", "Table without a primary key")


def _promotable(t: Table) -> Optional[Index]:
    """A valid, non-partial unique index on NOT NULL columns: ADD PRIMARY KEY USING INDEX can take it."""
    for idx in t.indexes:
        if not (idx.unique and usable(idx) and idx.columns):
            continue
        columns = [t.column(c) if c is not None else None for c in idx.columns]
        if all(c is not None and c.not_null for c in columns):
            return idx
    return None


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.audited_tables:
        if t.primary_key is not None:
            continue
        q = qname(t.schema, t.name)
        candidate = _promotable(t)
        if candidate is not None:
            fix = f"ALTER TABLE {q} ADD PRIMARY KEY USING INDEX {ident(candidate.name)};"
        else:
            fix = (
                f"ALTER TABLE {q} ADD COLUMN id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY;  "
                f"(or a primary key on existing unique, non-null columns)"
            )
        yield SPEC.finding(t, f"{qname(t.schema, t.name)} has no primary key", fix)

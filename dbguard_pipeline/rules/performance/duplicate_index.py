"""Two or more indexes with the same definition: every write maintains all of them, and they take space and
cache, for no benefit.

*What it checks.* Two or more valid indexes on a table have the same definition (same method, columns or
expressions, order, operator classes and predicate; a plain index duplicating a unique one counts). One
finding per redundant index (`object`); the primary key, constraint-backed and unique indexes are kept.

*Why it matters.* Every write maintains every copy; they take disk, cache and vacuum time for nothing.

*How to fix.* Drop the copy (the remediation names it; a constraint-backed copy is dropped with its
constraint, once no foreign key depends on it).

```sql
-- bad
CREATE INDEX d_a_1 ON public.d (a);
CREATE INDEX d_a_2 ON public.d (a);
-- fix
DROP INDEX CONCURRENTLY IF EXISTS public.d_a_2;
```
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from dbguard_pipeline.model.findings import Finding, Severity
from dbguard_pipeline.model.schema import Index
from dbguard_pipeline.rules import RuleSpec
from dbguard_pipeline.rules.context import RuleContext
from dbguard_pipeline.text import ident, qname

SPEC = RuleSpec("duplicate_index", Severity.WARNING, "performance", "Duplicate index")


def _normalized(idx: Index) -> str:
    """The index definition without its name (and UNIQUE), so that copies compare equal."""
    d = idx.definition
    for name in (ident(idx.name), idx.name, '"' + idx.name.replace('"', '""') + '"'):
        marker = f" INDEX {name} ON "
        if marker in d:
            d = d.replace(marker, " INDEX ON ", 1)
            break
    return re.sub(r"^CREATE UNIQUE INDEX", "CREATE INDEX", d)


def check(ctx: RuleContext) -> Iterator[Finding]:
    for t in ctx.audited_tables:
        constraints = {c.name: c for c in t.constraints if c.kind in ("primary_key", "unique", "exclusion")}
        groups: dict[str, list[Index]] = {}
        for idx in t.indexes:
            if idx.valid:
                groups.setdefault(_normalized(idx), []).append(idx)
        for same in groups.values():
            if len(same) < 2:
                continue
            same.sort(key=lambda i: (not i.primary, i.name not in constraints, not i.unique, i.name))
            keep = same[0]
            for extra in same[1:]:
                if extra.name in constraints:
                    fix = (
                        f"ALTER TABLE {qname(t.schema, t.name)} DROP CONSTRAINT {ident(extra.name)};"
                        f"  (check that no foreign key depends on it first)"
                    )
                else:
                    fix = f"DROP INDEX CONCURRENTLY IF EXISTS {qname(t.schema, extra.name)};"
                yield SPEC.finding(
                    t,
                    f"index {ident(extra.name)} on {qname(t.schema, t.name)} duplicates {ident(keep.name)}",
                    fix,
                    object=extra.name,
                    detail={"kept": keep.name, "definition": extra.definition},
                )

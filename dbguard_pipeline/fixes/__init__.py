"""Fix migrations. Writing them: ``actions/`` (one planner per action), ``select`` (which findings are fixable,
``--all``), ``plan`` (blocks and rendering), ``sql``, ``lint`` (squawk + pglast), ``sandbox`` (round trip on a
scratch copy), ``script`` (migration files). Running them: ``ledger`` (the ledger table, apply, rollback).
No Dagster imports here; ``services`` composes the steps for the CLI and ``defs/fix_migrations.py``."""

"""Fix migrations: plan (templates), lint (squawk + pglast), sandbox round trip, runner (ledger, apply,
rollback). No Dagster imports here; ``defs/fix_migrations.py`` wraps these functions in a job and a sensor."""

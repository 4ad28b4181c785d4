"""What the fleet job's forkserver imports once, before it forks a process per database (``jobs.PRELOAD``).

The code location, the instance's Postgres storage (dagster-postgres, SQLAlchemy, alembic: ~0.8 s CPU when a
step imports it itself) and the audit path a step runs (every rule module, the diff, the probe): a forked step
then starts with all of it in memory, shared copy-on-write. Importing this module has no other effect.
"""

import contextlib

import dbguard_pipeline.defs.definitions  # noqa: F401  the job itself
from dbguard_pipeline import audit, diff, probe, services  # noqa: F401
from dbguard_pipeline.rules import all_rules

all_rules()  # imports every rule module (cached)

with contextlib.suppress(ImportError):  # the [dagster] extra's Postgres instance storage, when installed
    import dagster_postgres  # noqa: F401

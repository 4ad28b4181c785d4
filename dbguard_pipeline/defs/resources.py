"""Dagster resources: the audited database and dbguard's configuration."""

from typing import Optional

import dagster as dg


class PostgresResource(dg.ConfigurableResource):
    """The database dbguard audits.

    ``dsn`` normally comes from ``dg.EnvVar("DBGUARD_DATABASE_URL")``; left empty it is the embedded
    demo database. The DSN is never written to metadata or logs: only :meth:`display_name` is.
    """

    dsn: Optional[str] = None
    config_path: Optional[str] = None  # dbguard.yaml; None = $DBGUARD_CONFIG or ./dbguard.yaml or defaults

    def resolved_dsn(self) -> str:
        from ..db import resolve_dsn

        return resolve_dsn(self.dsn)

    def display_name(self) -> str:
        from ..db import describe_dsn

        return describe_dsn(self.resolved_dsn())

    def load_config(self):
        from ..config import load_config

        return load_config(self.config_path)

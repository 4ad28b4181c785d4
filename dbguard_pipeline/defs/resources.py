"""Dagster resources: the audited database(s) and dbguard's configuration.

Both resources hand the assets a :class:`Target`: a display name (never a URL), the DSN to connect
with and the loaded configuration. Configuration is read at run time, not when the code location
loads, so a broken ``dbguard.yaml`` fails the run with a clear message (and an alert) instead of
taking the whole code location down.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Optional

import dagster as dg

from dbguard_pipeline.config import Config, DatabaseTarget
from dbguard_pipeline.errors import ConfigError, NotFoundError


@dataclass(frozen=True)
class Target:
    """One database to audit, as the assets see it."""

    name: str  # display name: the fleet name, or user@host:port/db; never contains the password
    dsn: str = ""
    config: Config = Config()
    partition: Optional[str] = None

    def __repr__(self) -> str:  # keep the DSN out of any repr that might reach a log
        return f"Target(name={self.name!r}, partition={self.partition!r})"


def target_dsn(target: DatabaseTarget, environ=os.environ) -> str:
    """The DSN of a fleet database: the environment variable ``dsn_env`` (preferred) or ``dsn``."""
    from dbguard_pipeline.pg.dsn import parse_dsn

    if target.dsn_env:
        dsn = environ.get(target.dsn_env)
        if not dsn:
            raise ConfigError(f"database {target.name!r}: environment variable {target.dsn_env} is not set")
    elif target.dsn:
        dsn = target.dsn
    else:
        raise ConfigError(f"database {target.name!r} has neither dsn_env nor dsn in the config")
    parse_dsn(dsn)  # a malformed URL is a one-line error that does not echo it
    return dsn


def fleet_targets(config: Config) -> tuple[DatabaseTarget, ...]:
    names = [t.name for t in config.databases]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ConfigError(f"databases: duplicate name {', '.join(map(repr, dupes))}")
    for n in names:
        # a name is a partition key: Dagster refuses control characters and "..." (its range separator)
        if not n.strip() or "..." in n or any(ord(ch) < 32 or ch == "\x7f" for ch in n):
            raise ConfigError(f"databases: invalid name {n!r} (no control characters, no '...')")
    return config.databases


class PostgresResource(dg.ConfigurableResource):
    """The database dbguard audits.

    ``dsn`` normally comes from ``dg.EnvVar("DBGUARD_DATABASE_URL")``; left empty it is the embedded
    demo database. The DSN is never written to metadata or logs: only :meth:`display_name` is.
    """

    dsn: Optional[str] = None
    config_path: Optional[str] = None  # dbguard.yaml; None = $DBGUARD_CONFIG or ./dbguard.yaml or defaults

    def resolved_dsn(self) -> str:
        from dbguard_pipeline.services import resolve_dsn

        return resolve_dsn(self.dsn)

    def display_name(self) -> str:
        from dbguard_pipeline.pg.dsn import describe_dsn

        return describe_dsn(self.resolved_dsn())

    def load_config(self) -> Config:
        from dbguard_pipeline.config import load_config

        return load_config(self.config_path)

    def target(self, partition_key: Optional[str] = None) -> Target:
        from dbguard_pipeline.pg.dsn import describe_dsn

        config = self.load_config()
        dsn = self.resolved_dsn()
        return Target(name=describe_dsn(dsn), dsn=dsn, config=config, partition=None)


class FleetResource(dg.ConfigurableResource):
    """The fleet: ``databases:`` in dbguard.yaml, one partition per database name."""

    config_path: Optional[str] = None

    def load_config(self) -> Config:
        from dbguard_pipeline.config import load_config

        return load_config(self.config_path)

    def names(self) -> list[str]:
        return [t.name for t in fleet_targets(self.load_config())]

    def target(self, partition_key: Optional[str]) -> Target:
        config = self.load_config()
        if not partition_key:
            raise ConfigError("a fleet audit needs a database name (the partition key)")
        for t in fleet_targets(config):
            if t.name == partition_key:
                return Target(name=t.name, dsn=target_dsn(t), config=config, partition=t.name)
        raise NotFoundError(f"database {partition_key!r} is not listed under databases: in the config")

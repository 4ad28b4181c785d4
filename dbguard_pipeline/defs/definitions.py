"""The one place where dbguard's Dagster Definitions are composed (workspace.yaml loads this module)."""

import os

import dagster as dg

from ..db import ENV_DSN
from . import assets
from .resources import PostgresResource


def database_resource() -> PostgresResource:
    # The DSN comes from the environment at run time (never stored in the code location's config);
    # without it, the embedded demo database.
    if os.environ.get(ENV_DSN):
        return PostgresResource(dsn=dg.EnvVar(ENV_DSN), config_path=os.environ.get("DBGUARD_CONFIG"))
    return PostgresResource(config_path=os.environ.get("DBGUARD_CONFIG"))


all_assets = dg.load_assets_from_modules([assets])

defs = dg.Definitions(
    assets=all_assets,
    resources={"database": database_resource()},
)

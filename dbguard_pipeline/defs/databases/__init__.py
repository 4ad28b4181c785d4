"""The defs folder of dbguard's dg project (``[tool.dg.project] defs_module``): one sub-folder per database that a
team adds to the nightly audit, each holding a ``defs.yaml`` of type
``dbguard_pipeline.defs.component.DbguardDatabase`` (see docs/dagster.md, "Add a database in YAML")."""

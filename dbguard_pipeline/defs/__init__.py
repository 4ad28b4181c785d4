"""The Dagster layer: assets, asset checks, jobs, schedules, sensors and resources over the core."""

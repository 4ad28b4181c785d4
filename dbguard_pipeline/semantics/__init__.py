"""One home per judgment, no I/O: tenancy, foreign-key references, roles, index coverage, isolation, weakening.
The rules, the probe, the generator, the diff and the Dagster checks all ask these modules."""

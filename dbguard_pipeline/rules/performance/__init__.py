"""Performance rules: indexes the tenant model needs, redundant indexes, policies evaluated per row."""

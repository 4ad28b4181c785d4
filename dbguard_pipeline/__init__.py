"""dbguard: audits, proves and fixes tenant isolation in multi-tenant PostgreSQL."""

__version__ = "0.1.0"

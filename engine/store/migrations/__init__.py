"""Versioned schema migrations, one module per backend.

Each module's MIGRATIONS is a tuple of migrations; migration N (1-based) is a tuple of SQL
statements applied in one transaction, after which the schema is at version N. Applied
migrations are never edited: a change is a new migration appended at the end (later
tables — api keys, subscriptions, deliveries, kv — arrive that way).
"""

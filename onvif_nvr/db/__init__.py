"""The SQL index and configuration store (SQLAlchemy 2, Alembic migrations)."""

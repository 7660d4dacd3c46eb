"""Adapters: PostgreSQL through SQLAlchemy, and the payments and kitchen HTTP clients."""

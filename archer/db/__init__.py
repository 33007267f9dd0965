"""Database: SQLAlchemy tables mirroring schema.sql and the store adapter (sync, in threads)."""

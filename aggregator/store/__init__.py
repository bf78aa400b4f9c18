"""Persistence: SQLModel tables (models.py) and the database access (db.py)."""

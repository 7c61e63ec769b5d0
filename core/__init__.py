"""Pieces every domain package shares: the SQLAlchemy base and engine factory, typed errors."""

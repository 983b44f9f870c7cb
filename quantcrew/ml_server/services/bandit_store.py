"""Bandits per regime, persisted in SQLite beside the model registry.

Skeleton: the contract below is fixed; the implementation is being written.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["BanditStore"]


class BanditStore:
    """Creates bandits, records decisions and rewards; state survives a restart."""

    def __init__(self, db_path: Path) -> None:
        self.db_path = Path(db_path)

    def close(self) -> None:
        """Close the database connection."""

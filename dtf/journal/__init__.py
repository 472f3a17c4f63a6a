"""Durable command log and snapshots: the protocol and its embedded SQLite backend."""

from dtf.journal.base import Journal
from dtf.journal.sqlite import JournalError, SqliteJournal

__all__ = ["Journal", "JournalError", "SqliteJournal"]

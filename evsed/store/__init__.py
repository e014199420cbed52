"""Durable records in SQLite under the state directory: sessions, and the event outbox."""

"""The app's one resource: a tenant's notes, as SQL and as JSON.

The queries name the table unqualified: the transaction's search_path is the
tenant's schema, so the same text serves every tenant (migrations/001_notes.sql
creates the table the same way).
"""

from __future__ import annotations

import json

import psycopg

LIST_LIMIT = 100
MAX_BODY_BYTES = 64 * 1024

_LIST = "SELECT id, body, created_at FROM notes ORDER BY created_at DESC, id DESC LIMIT %s"
_ADD = "INSERT INTO notes (body) VALUES (%s) RETURNING id, body"


class BadNote(ValueError):
    """A request body that is not a note; the message tells the client what to send."""


def note_body(raw: bytes) -> str:
    """The text of a new note from a request body of the form {"body": "text"}."""
    try:
        payload = json.loads(raw)
    except ValueError:
        raise BadNote('the request body is not JSON; send {"body": "text"}') from None
    if not isinstance(payload, dict) or not isinstance(payload.get("body"), str) or not payload["body"]:
        raise BadNote('send a JSON object with a non-empty string "body"')
    return payload["body"]


def list_notes(conn: psycopg.Connection) -> list[dict]:
    """The newest notes first, at most LIST_LIMIT."""
    rows = conn.execute(_LIST, (LIST_LIMIT,)).fetchall()
    return [{"id": id_, "body": body, "created_at": created_at.isoformat()} for id_, body, created_at in rows]


def add_note(conn: psycopg.Connection, body: str) -> dict:
    row = conn.execute(_ADD, (body,)).fetchone()
    assert row is not None, "INSERT ... RETURNING of one row returns one row"
    return {"id": row[0], "body": row[1]}

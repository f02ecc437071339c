"""A tenant's realistic data for migration tests, written and checked with the tenant's own credentials."""

from __future__ import annotations

import base64

import psycopg

from tenant_operator.api.kinds import KINDS, ObjectRef
from tenant_operator.infra.kube import Kube

CUSTOMERS = 500
ORDERS = 3000


def tenant_secret(kube: Kube, name: str) -> dict[str, str]:
    secret = kube.read(ObjectRef(KINDS[("v1", "Secret")], "tenant-db", f"tenant-{name}"))
    return {key: base64.b64decode(value).decode() for key, value in secret["data"].items()}


def write_sample_data(url: str) -> None:
    """Tables with a foreign key, a sequence, a few thousand rows and a large text column."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE customers (id bigserial PRIMARY KEY, name text NOT NULL UNIQUE)")
        conn.execute("CREATE TABLE orders (id bigserial PRIMARY KEY,"
                     " customer_id bigint NOT NULL REFERENCES customers(id), total numeric(12,2), note text)")
        conn.execute("CREATE SEQUENCE invoice_numbers START 1000")
        conn.execute("CREATE INDEX orders_by_customer ON orders (customer_id)")
        conn.execute("INSERT INTO customers (name) SELECT 'customer ' || g FROM generate_series(1, %s) g",
                     [CUSTOMERS])
        conn.execute(
            "INSERT INTO orders (customer_id, total, note) SELECT 1 + g %% %s, g * 1.25,"
            " CASE WHEN g %% 100 = 0 THEN repeat(md5(g::text), 4000) ELSE 'order ' || g END"
            " FROM generate_series(1, %s) g", [CUSTOMERS, ORDERS])
        for _ in range(7):
            conn.execute("SELECT nextval('invoice_numbers')")


def read_fingerprint(url: str) -> dict:
    """What a user would compare after a move: counts, sums, the big texts, sequences, the FK."""
    with psycopg.connect(url, autocommit=True) as conn:
        return {
            "customers": conn.execute("SELECT count(*), max(id) FROM customers").fetchone(),
            "orders": conn.execute("SELECT count(*), sum(total), sum(length(note)), md5(string_agg(note, ','"
                                   " ORDER BY id)) FROM orders").fetchone(),
            "invoice_seq": conn.execute("SELECT last_value FROM invoice_numbers").fetchone()[0],
            "orders_seq": conn.execute("SELECT last_value FROM orders_id_seq").fetchone()[0],
            "fk": conn.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'"
                               " AND connamespace = current_schema()::regnamespace").fetchone()[0],
            "schema": conn.execute("SELECT current_schema()").fetchone()[0],
        }


def can_write(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO customers (name) VALUES ('after the move ' || clock_timestamp())")
        return conn.execute("SELECT nextval('invoice_numbers')").fetchone()[0] > 1000

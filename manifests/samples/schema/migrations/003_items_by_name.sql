-- tenant-operator: no-transaction
CREATE INDEX CONCURRENTLY IF NOT EXISTS items_by_name ON items (name);

-- The shared app's one table. Run as the tenant's own role with its schema
-- first in search_path: the names are unqualified so one file serves every
-- tenant, and the tenant owns what it creates.
CREATE TABLE notes (
    id bigserial PRIMARY KEY,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

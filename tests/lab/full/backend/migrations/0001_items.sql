-- Items written through POST /items: the client chooses the key, which is unique (a second write of a key is
-- refused, so a test can prove that every successful write exists exactly once).
CREATE TABLE items (
    id bigserial PRIMARY KEY,
    key text NOT NULL UNIQUE,
    body text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

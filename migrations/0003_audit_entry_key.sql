-- Each audit entry's idempotency key, made with the entry by the replica
-- that recorded it, so a retried write inserts nothing twice while two
-- changes alike in every other field are both kept. Entries written
-- before this migration, or without a key, keep NULL: a UNIQUE index
-- treats NULLs as distinct.
ALTER TABLE audit_log ADD COLUMN entry_key text;
CREATE UNIQUE INDEX audit_log_entry_key ON audit_log (entry_key);

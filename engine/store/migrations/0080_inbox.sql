-- The inbox: where the SQLite journal writes an inbound message before its ACK. It has one
-- small index, so the fsynced commit a sender waits on writes a few pages instead of the
-- messages table's eleven indexes; SqliteStore.promote_inbox moves rows (same id) into
-- messages shortly after, in a commit nobody waits on. The PostgreSQL backend journals
-- straight into messages and leaves this table empty.
CREATE TABLE inbox (
    id INTEGER PRIMARY KEY,
    channel {text} NOT NULL,
    transport {text} NOT NULL,
    peer {text} NOT NULL DEFAULT '',
    sender {text} NOT NULL DEFAULT '',
    control_id {text},
    message_type {text},
    status {text} NOT NULL,
    reason {text},
    received_at {float} NOT NULL,
    raw {blob},
    meta {text} NOT NULL DEFAULT '{}',
    content_hash {text}
);
CREATE INDEX inbox_dedupe ON inbox (channel, sender, control_id);

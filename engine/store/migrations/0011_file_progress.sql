-- Files the `file` source is reading (channels/file.py): one row per file content
-- (name + fingerprint of size and first 64 KiB). next_index: messages 1..n are journaled;
-- exact = 1 after a failed commit (resume from next_index, not from the journal).
CREATE TABLE file_progress (
    channel {text} NOT NULL,
    name {text} NOT NULL,
    fingerprint {text} NOT NULL,
    status {text} NOT NULL,
    started_at {float} NOT NULL,
    next_index BIGINT NOT NULL DEFAULT 0,
    exact INTEGER NOT NULL DEFAULT 0,
    messages BIGINT NOT NULL DEFAULT 0,
    detail {text},
    updated_at {float} NOT NULL,
    PRIMARY KEY (channel, name, fingerprint)
);

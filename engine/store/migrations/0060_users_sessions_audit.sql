-- Operators: local users, server-side sessions, login throttling, the append-only audit
-- log, and the indexes the admin API's message filters and worklists need.
CREATE TABLE users (
    name {text} PRIMARY KEY,
    password_hash {text} NOT NULL,
    role {text} NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at {float} NOT NULL,
    updated_at {float} NOT NULL
);

-- Only a SHA-256 of the session id is stored: a copy of this table opens no session.
CREATE TABLE sessions (
    id_hash {text} PRIMARY KEY,
    user_name {text} NOT NULL,
    csrf_token {text} NOT NULL,
    ip {text} NOT NULL DEFAULT '',
    created_at {float} NOT NULL,
    last_seen_at {float} NOT NULL,
    expires_at {float} NOT NULL
);
CREATE INDEX sessions_user ON sessions (user_name);

-- Failed logins per user + client address; a lockout window after too many.
CREATE TABLE login_failures (
    key {text} PRIMARY KEY,
    failures INTEGER NOT NULL,
    first_failed_at {float} NOT NULL,
    locked_until {float}
);

-- Append-only: code inserts and reads, never updates or deletes.
CREATE TABLE audit (
    id {id},
    at {float} NOT NULL,
    actor {text} NOT NULL,
    action {text} NOT NULL,
    target {text},
    outcome {text} NOT NULL,
    detail {text},
    ip {text} NOT NULL DEFAULT ''
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_actor ON audit (actor, id);
CREATE INDEX audit_target ON audit (target, id);

-- Message search: keyset pagination walks id DESC within each filter.
CREATE INDEX messages_channel_id ON messages (channel, id);
CREATE INDEX messages_control ON messages (control_id);
CREATE INDEX messages_type_id ON messages (message_type, id);
CREATE INDEX messages_channel_status ON messages (channel, status);
CREATE INDEX charges_channel_status ON charges (channel, status);
CREATE INDEX deliveries_status ON deliveries (status, updated_at);

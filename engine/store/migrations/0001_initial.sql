-- The spine: messages (raw journal), charges, deliveries, events, counters.
-- Type tokens ({id}, {blob}, {float}, {text}) are filled in per backend.
CREATE TABLE messages (
    id {id},
    channel {text} NOT NULL,
    transport {text} NOT NULL,
    peer {text} NOT NULL DEFAULT '',
    sender {text} NOT NULL DEFAULT '',
    control_id {text},
    message_type {text},
    mrn {text},
    status {text} NOT NULL,
    reason {text},
    received_at {float} NOT NULL,
    updated_at {float} NOT NULL,
    raw {blob},
    meta {text} NOT NULL DEFAULT '{}',
    counts {text} NOT NULL DEFAULT '{}',
    lease_owner {text},
    lease_until {float},
    attempts INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX messages_dedupe ON messages (channel, sender, control_id);
CREATE INDEX messages_status ON messages (status, id);
CREATE INDEX messages_channel_time ON messages (channel, received_at);
CREATE INDEX messages_time ON messages (received_at);
CREATE INDEX messages_mrn ON messages (mrn);
CREATE INDEX messages_type ON messages (message_type, received_at);

CREATE TABLE charges (
    charge_id {text} PRIMARY KEY,
    message_id BIGINT NOT NULL,
    channel {text} NOT NULL,
    status {text} NOT NULL,
    transaction_type {text} NOT NULL,
    amount {text},
    service_date {text},
    duplicate_key {text},
    data {text} NOT NULL,
    findings {text} NOT NULL DEFAULT '[]',
    created_at {float} NOT NULL,
    updated_at {float} NOT NULL
);
CREATE INDEX charges_message ON charges (message_id);
CREATE INDEX charges_status ON charges (status, created_at);
CREATE INDEX charges_dupkey ON charges (duplicate_key, created_at);

CREATE TABLE deliveries (
    id {id},
    charge_id {text} NOT NULL,
    destination {text} NOT NULL,
    kind {text} NOT NULL DEFAULT 'original',
    status {text} NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at {float} NOT NULL,
    lease_owner {text},
    lease_until {float},
    batch_id BIGINT,
    detail {text},
    response {text},
    result {text} NOT NULL DEFAULT '{}',
    created_at {float} NOT NULL,
    updated_at {float} NOT NULL,
    UNIQUE (charge_id, destination, kind)
);
CREATE INDEX deliveries_queue ON deliveries (destination, status, next_attempt_at);
CREATE INDEX deliveries_batch ON deliveries (batch_id);

CREATE TABLE events (
    id {id},
    at {float} NOT NULL,
    entity {text} NOT NULL,
    entity_id {text} NOT NULL,
    status {text} NOT NULL,
    reason {text}
);
CREATE INDEX events_entity ON events (entity, entity_id);

CREATE TABLE counters (
    name {text} PRIMARY KEY,
    value BIGINT NOT NULL
);

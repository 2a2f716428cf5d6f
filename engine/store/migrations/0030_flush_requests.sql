-- `chargebridge flush` runs in its own process: it records the request here and the
-- delivery runner of whichever node batches that destination consumes it.
CREATE TABLE flush_requests (
    id {id},
    destination {text} NOT NULL,
    requested_at {float} NOT NULL,
    requested_by {text} NOT NULL DEFAULT '',
    consumed_at {float}
);
CREATE INDEX flush_requests_pending ON flush_requests (destination, consumed_at);

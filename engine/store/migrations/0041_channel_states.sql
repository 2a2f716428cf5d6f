-- Channel start / stop / pause decided by an operator, applied by every node: nodes poll
-- this table and bring their own listeners in line (engine/cluster.py).
CREATE TABLE channel_states (
    name {text} PRIMARY KEY,
    state {text} NOT NULL,
    updated_at {float} NOT NULL,
    updated_by {text} NOT NULL DEFAULT ''
);

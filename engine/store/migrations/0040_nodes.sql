-- Per-node heartbeat: one row per engine process (node name + role), written every few
-- seconds. The dashboard and /readyz read it; PostgreSQL lease claiming treats a lease
-- whose owner stopped beating as expired (engine/cluster.py, engine/store/postgres.py).
CREATE TABLE nodes (
    name {text} NOT NULL,
    role {text} NOT NULL,
    pid INTEGER NOT NULL,
    host {text} NOT NULL DEFAULT '',
    started_at {float} NOT NULL,
    last_seen {float} NOT NULL,
    PRIMARY KEY (name, role)
);

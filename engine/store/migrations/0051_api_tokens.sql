-- API tokens for machine clients (FHIR senders, scripts). Only the sha256 of a token is
-- kept: the token itself is printed once when it is made and cannot be read back.
CREATE TABLE api_tokens (
    id {id},
    name {text} NOT NULL UNIQUE,
    role {text} NOT NULL,
    token_hash {text} NOT NULL UNIQUE,
    created_at {float} NOT NULL,
    revoked_at {float}
);

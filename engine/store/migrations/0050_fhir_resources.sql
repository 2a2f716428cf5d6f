-- FHIR resources received over REST: the current version of each resource (keyed by type
-- and id), every version ever stored, the identifiers used for conditional create and
-- duplicate detection, and the references used to find e.g. a Patient's Coverages.
-- message_id is the journal message of that version; NULL until it is journaled.
CREATE TABLE fhir_resources (
    resource_type {text} NOT NULL,
    resource_id {text} NOT NULL,
    version_id INTEGER NOT NULL,
    channel {text} NOT NULL,
    content {text} NOT NULL,
    content_hash {text} NOT NULL,
    message_id BIGINT,
    last_updated {float} NOT NULL,
    PRIMARY KEY (resource_type, resource_id)
);

CREATE TABLE fhir_resource_versions (
    resource_type {text} NOT NULL,
    resource_id {text} NOT NULL,
    version_id INTEGER NOT NULL,
    content {text} NOT NULL,
    message_id BIGINT,
    last_updated {float} NOT NULL,
    PRIMARY KEY (resource_type, resource_id, version_id)
);

CREATE TABLE fhir_identifiers (
    resource_type {text} NOT NULL,
    system {text} NOT NULL,
    value {text} NOT NULL,
    resource_id {text} NOT NULL,
    PRIMARY KEY (resource_type, system, value)
);
CREATE INDEX fhir_identifiers_resource ON fhir_identifiers (resource_type, resource_id);
CREATE INDEX fhir_identifiers_value ON fhir_identifiers (resource_type, value);

CREATE TABLE fhir_references (
    resource_type {text} NOT NULL,
    resource_id {text} NOT NULL,
    path {text} NOT NULL,
    target {text} NOT NULL
);
CREATE INDEX fhir_references_source ON fhir_references (resource_type, resource_id);
CREATE INDEX fhir_references_target ON fhir_references (target, path, resource_type);

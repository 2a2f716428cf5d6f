-- ADT context (engine/context): what ADT messages said about a patient, a visit and its
-- coverage, so a DFT lacking them can be enriched and one disagreeing with them flagged.
-- kind: patient (visit = ''), visit, coverage (visit = '' for the patient's latest).
-- data: JSON {"fields": {charge path: value}, "sources": {charge path: message id}}
-- or, for coverage, {"coverage": [...], "source": message id}.
CREATE TABLE adt_context (
    kind {text} NOT NULL,
    mrn {text} NOT NULL,
    visit {text} NOT NULL DEFAULT '',
    data {text} NOT NULL,
    message_id BIGINT NOT NULL,
    message_time {text} NOT NULL DEFAULT '',
    updated_at {float} NOT NULL,
    PRIMARY KEY (kind, mrn, visit)
);

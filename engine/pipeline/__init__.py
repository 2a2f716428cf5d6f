"""The pipeline: ingest (journal then acknowledge), the processor (parse, map, scrub,
route) and the delivery runner. They meet only in the store."""

"""ASC X12 837P 005010X222A1: claim grouping, the file writer and the pyx12 check."""

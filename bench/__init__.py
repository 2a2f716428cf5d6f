"""Load generators and benchmarks (`make bench`)."""

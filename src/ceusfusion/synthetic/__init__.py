"""A synthetic cohort that looks, file by file, like a hospital export (for the demo, tests and benchmarks)."""

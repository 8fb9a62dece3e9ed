"""Stage: evaluate. Reads predictions CSVs; writes ``RUN/evaluation/`` (metrics.json, table2.csv,
comparisons.csv, dca.csv, figures)."""

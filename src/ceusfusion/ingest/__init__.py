"""Stage: ingest. Reads the cohort manifest and its files; writes ``RUN/cohort.csv`` and ``RUN/prepared/``
(ROI arrays, keyframes.json, perfusion.csv, contact sheets, failures.csv)."""

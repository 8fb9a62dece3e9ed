"""Stage: report. Reads every record of a run directory; writes ``RUN/report.html`` (one self-contained file)."""

"""Stage: explain. Reads trained models and the prepared cache; writes ``RUN/explain/<name>/`` (Grad-CAM
overlays, arrays, explain.json) and Figure 5."""

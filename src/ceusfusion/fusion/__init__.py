"""Stage: fusion. Reads trained models and ``RUN/features/*.parquet``; writes the features and
``RUN/fusion/`` (DL_combined: scaler, LASSO, classifier families, predictions)."""

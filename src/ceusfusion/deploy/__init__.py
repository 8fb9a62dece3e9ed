"""Stage: deploy. ``export`` reads a finished run and writes a checksummed bundle; ``predict`` reads a
bundle and a new patient's files and writes prediction.json and Grad-CAM overlays."""

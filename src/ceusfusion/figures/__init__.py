"""Every figure of the package, drawn from plain arrays and records (no stage logic): ROC, calibration and
decision curves, fusion panels, Grad-CAM overlays, Figure 5, time-intensity curves."""

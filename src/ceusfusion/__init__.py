"""ceusfusion: multimodal ultrasound (B-mode + CEUS) deep learning for clinical research."""

__version__ = "0.1.0"

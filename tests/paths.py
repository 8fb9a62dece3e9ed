"""Where the tests find the repository and the shared data, wherever a test file sits under tests/."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]  # the repository
SHARED = ROOT.parent / "shared"  # real data and R reference outputs beside the checkout (optional)

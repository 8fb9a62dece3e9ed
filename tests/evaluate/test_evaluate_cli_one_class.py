"""`ceusfusion evaluate` on a test set with one outcome class prints what is undefined instead of crashing."""

import numpy as np
import pandas as pd
from cli_run import exit_code
from scipy.special import expit


def test_the_command_reports_an_all_positive_test_set(tmp_path, capsys):
    rng = np.random.default_rng(5)
    y = np.r_[(rng.random(60) < 0.4).astype(int), np.ones(20, int)]
    pd.DataFrame({"case_id": [f"c{i}" for i in range(80)], "set": ["train"] * 60 + ["test"] * 20, "fold": -1,
                  "y": y, "prob": expit(rng.normal(1.5 * y - 0.7, 1.0))}).to_csv(tmp_path / "A.csv", index=False)
    assert exit_code(["evaluate", str(tmp_path / "A.csv"), "--out", str(tmp_path / "ev"), "--no-figures"]) == 0
    out = capsys.readouterr().out
    assert "undefined" in out and (tmp_path / "ev" / "table2.csv").is_file()

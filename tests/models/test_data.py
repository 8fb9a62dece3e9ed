"""The cache in memory: a test case must not change how the model's input is built."""

import numpy as np
from fake_run import make_fake_run

from ceusfusion.ingest import cache
from ceusfusion.models.data import load_cached


def test_grey_or_colour_is_decided_by_the_training_cases_alone(tmp_path):
    """Grey training cases and one colour test case: the model stays grey (one channel per frame), and the
    colour test case is averaged to grey, as ``predict`` does for a new patient."""
    run = make_fake_run(tmp_path, n_train=8, n_test=2, size=16, frames=2, colour=False)
    idx = cache.read_index(run)
    test_id = idx.loc[idx["split"] == "test", "case_id"].iloc[0]
    arrays, record = cache.read_case_file(run, test_id)
    grey = arrays["video"]
    arrays["video"] = np.repeat(grey[..., None], 3, -1)  # the same frames, stored as RGB
    cache.save_case(run, test_id, record=record, **arrays)
    data = load_cached(run, "video")
    assert data.frame_channels == 1
    row = data.case_ids.index(test_id)
    np.testing.assert_array_equal(data.x[row].numpy(), grey)

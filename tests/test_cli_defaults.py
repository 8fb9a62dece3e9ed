"""The CLI's defaults are the stage configs' defaults: one value, wherever a setting is read from.

The CLI writes its defaults out (so that `ceusfusion --help` does not import torch); this test holds
them to the pydantic stage configs that the study YAML and the saved config.json use.
"""

from __future__ import annotations

import pytest
import typer

from ceusfusion.cli import app
from ceusfusion.explain.cases import ExplainSettings
from ceusfusion.fusion.pipeline import FusionConfig
from ceusfusion.ingest.prepare import PrepareParams
from ceusfusion.models.pretrain import PretrainConfig
from ceusfusion.models.train import TrainConfig
from ceusfusion.radiomics.settings import RadiomicsConfig

CASES = [("prepare", PrepareParams, set()), ("train", TrainConfig, {"modality"}), ("fuse", FusionConfig, {"classifiers"}),
         ("explain", ExplainSettings, {"per_class"}), ("pretrain", PretrainConfig, set()),
         ("radiomics", RadiomicsConfig, set())]


@pytest.mark.parametrize("command,model,skip", CASES, ids=[c[0] for c in CASES])
def test_cli_defaults_equal_the_stage_config(command, model, skip):
    cmd = typer.main.get_command(app).commands[command]
    checked = 0
    for p in cmd.params:
        if p.name in model.model_fields and p.name not in skip:
            want = model.model_fields[p.name].default
            assert p.default == want or (p.default is None and want is None), f"{command} --{p.name}: {p.default!r} != {want!r}"
            checked += 1
    assert checked >= 3  # the test looks at real options


def test_fuse_classifier_default_is_every_family():
    cmd = typer.main.get_command(app).commands["fuse"]
    (p,) = [p for p in cmd.params if p.name == "classifiers"]
    assert tuple(p.default.split(",")) == FusionConfig.model_fields["classifiers"].default

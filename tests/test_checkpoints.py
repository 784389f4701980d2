import pytest
import torch

from latentdiff.checkpoints.io import (flatten_optimizer, load_weights, read_metadata, read_tensors, require_kind,
                                       save_checkpoint, unflatten_optimizer)
from latentdiff.errors import UserError


def test_round_trip_with_metadata(tmp_path):
    path = save_checkpoint(tmp_path / "a.safetensors", {"w.x": torch.arange(3.0), "v.y": torch.ones(2)},
                           {"latentdiff.kind": "autoencoder", "config": {"a": [1, 2]}})
    assert read_metadata(path) == {"latentdiff.kind": "autoencoder", "config": {"a": [1, 2]}}
    assert list(read_tensors(path, "w.")) == ["x"]
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind


def test_failed_write_keeps_the_previous_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path / "a.safetensors", {"x": torch.ones(2)}, {"step": 1})
    with pytest.raises(Exception):
        save_checkpoint(path, {"x": "not a tensor"}, {"step": 2})
    assert read_metadata(path) == {"step": 1} and list(tmp_path.iterdir()) == [path]


def test_bad_files_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_metadata(tmp_path / "missing.safetensors")
    path = save_checkpoint(tmp_path / "a.safetensors", {"x": torch.ones(1000)}, {"latentdiff.kind": "autoencoder"})
    with pytest.raises(UserError, match="latent_diffusion checkpoint is needed"):
        require_kind(path, "latent_diffusion", "train one")
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:-1000])
    with pytest.raises(UserError):
        read_tensors(truncated)
    (tmp_path / "c.ckpt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(UserError, match="not a readable safetensors"):
        read_metadata(tmp_path / "c.ckpt")


def test_load_weights_names_the_bad_keys():
    module = torch.nn.Linear(2, 3)
    with pytest.raises(UserError, match=r"missing bias.*unexpected extra.*mis-shaped weight \(3, 3\)"):
        load_weights(module, {"weight": torch.zeros(3, 3), "extra": torch.zeros(1)}, "file")


def test_optimizer_state_round_trip():
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, rest = flatten_optimizer(opt.state_dict())
    restored = torch.optim.AdamW(model.parameters(), lr=1.0)
    restored.load_state_dict(unflatten_optimizer(tensors, rest))
    for key, value in opt.state_dict()["state"][0].items():
        torch.testing.assert_close(restored.state_dict()["state"][0][key], value)
    assert restored.param_groups[0]["lr"] == 1e-3

import pytest
import torch

from latentdiff.checkpoints.io import (flatten_optimizer, load_weights, read_metadata,
                                       read_tensors, require_kind,
                                       save_checkpoint, unflatten_optimizer)
from latentdiff.errors import UserError


def test_round_trip_with_metadata(tmp_path):
    path = save_checkpoint(tmp_path / "a.safetensors",
                           {"w.x": torch.arange(3.0), "v.y": torch.ones(2)},
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
    path = save_checkpoint(tmp_path / "a.safetensors", {"x": torch.ones(1000)},
                           {"latentdiff.kind": "autoencoder"})
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
    with pytest.raises(UserError,
                       match=r"missing bias.*unexpected extra.*mis-shaped weight \(3, 3\)"):
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


def test_our_writer_makes_files_safetensors_reads_for_every_dtype(tmp_path):
    """The checkpoint writer is our own (its temporaries are ours to clean up): safetensors' reader
    opens its files, every dtype and shape comes back bit for bit, and an empty or a 0-d tensor
    too."""
    from safetensors import safe_open

    from latentdiff.checkpoints.io import DTYPES

    generator = torch.Generator().manual_seed(0)
    tensors = {f"t.{str(dtype)[6:]}": (torch.randn(3, 5, generator=generator) * 50).to(dtype)
               for dtype in DTYPES}
    tensors |= {"scalar": torch.tensor(2.5), "empty": torch.zeros(0, 4),
                "strided": torch.arange(12.0).view(3, 4).T}
    path = save_checkpoint(tmp_path / "all.safetensors", tensors, {"note": "x"})
    with safe_open(str(path), framework="pt") as f:
        assert set(f.keys()) == set(tensors)
        for key, tensor in tensors.items():
            loaded = f.get_tensor(key)
            assert loaded.dtype == tensor.dtype and loaded.shape == tensor.shape, key
            as_bytes = [t.contiguous().reshape(-1).view(torch.uint8) for t in (loaded, tensor)]
            assert torch.equal(*as_bytes), key


@pytest.mark.parametrize("where", ["tensor", "metadata"])
def test_a_flipped_bit_anywhere_is_found_and_trusted_files_skip_the_check(tmp_path, where):
    from latentdiff.checkpoints.io import trusted_files

    path = save_checkpoint(tmp_path / "a.safetensors", {"x": torch.ones(64)},
                           {"config": {"lr": 0.001}})
    data = bytearray(path.read_bytes())
    # 0.001 → 0.0!1 / a weight
    offset = data.index(b"0.001") + 2 if where == "metadata" else len(data) - 10
    data[offset] ^= 0x10
    damaged = tmp_path / "damaged.safetensors"
    damaged.write_bytes(bytes(data))
    with pytest.raises(UserError, match="damaged.safetensors is corrupted"):
        read_tensors(damaged)
    with trusted_files():
        read_metadata(damaged) if where == "tensor" else read_tensors(damaged)

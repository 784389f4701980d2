"""The VQ regulariser: nearest-code lookup, straight-through gradient, its two loss terms, dead-code
restarts, codebook usage in training, and the errors for codebooks that do not fit."""

import pytest
import torch

from conftest import tiny_autoencoder_config
from latentdiff.autoencoder import AutoencoderVQ, VectorQuantizer
from latentdiff.autoencoder.vq import perplexity, restart_codes
from latentdiff.checkpoints import load_autoencoder, read_metadata
from latentdiff.config import AutoencoderConfig
from latentdiff.errors import UserError
from latentdiff.train.autoencoder import train_autoencoder

TINY_VQ = ("model.regularizer=vq", "model.codebook_size=32")


def test_nearest_code_matches_brute_force_and_chunking():
    torch.manual_seed(0)
    vq = VectorQuantizer(300, 4)
    z = torch.randn(1000, 4)
    expected = torch.cdist(z, vq.embedding.weight).argmin(1)
    assert torch.equal(vq.nearest(z), expected)
    assert torch.equal(vq.nearest(z, chunk=7), expected)
    # bf16-mixed training must not change the choice
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert torch.equal(vq.nearest(z), expected)


def test_straight_through_gradient_and_loss_terms():
    torch.manual_seed(0)
    vq = VectorQuantizer(16, 3)
    z = torch.randn(2, 3, 4, 4, requires_grad=True)
    q = vq(z)
    torch.testing.assert_close(q.z_q, vq.lookup(q.indices))  # forward value: the codes
    (q.z_q * torch.arange(3.0).view(1, 3, 1, 1)).sum().backward()
    # backward: identity
    torch.testing.assert_close(z.grad, torch.arange(3.0).view(1, 3, 1, 1).expand_as(z))
    z.grad = None
    q = vq(z)
    q.codebook.sum().backward()  # the codebook term moves codes, never the encoder
    assert z.grad is None or z.grad.abs().max() == 0
    assert vq.embedding.weight.grad.abs().max() > 0
    vq.embedding.weight.grad = None
    q = vq(z)
    q.commitment.sum().backward()  # the commitment term moves the encoder, never the codes
    assert z.grad.abs().max() > 0
    assert vq.embedding.weight.grad is None or vq.embedding.weight.grad.abs().max() == 0


def test_restart_replaces_only_dead_codes_by_candidates():
    codes = torch.zeros(6, 2)
    dead = torch.tensor([True, False, True, False, False, True])
    candidates = torch.tensor([[1.0, 1.0], [2.0, 2.0]])
    new = restart_codes(codes, dead, candidates, torch.Generator().manual_seed(0))
    assert torch.equal(new[~dead], codes[~dead])
    assert all(any(torch.equal(row, c) for c in candidates) for row in new[dead])


def test_perplexity_counts_effective_codes():
    assert perplexity(torch.tensor([5, 5, 5, 5])) == pytest.approx(4.0)
    assert perplexity(torch.tensor([7, 0, 0, 0])) == pytest.approx(1.0)


def test_decode_quantizes_the_continuous_latents(tiny_ae_cfg):
    model = AutoencoderVQ(AutoencoderConfig(**{**tiny_ae_cfg.__dict__, "regularizer": "vq",
                                               "codebook_size": 8})).eval()
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        h = model.encode(x).mean
        q = model.quantize(h)
        torch.testing.assert_close(model.decode(h), model.decode_codes(q.z_q))
        torch.testing.assert_close(model(x)[0], model.decode(h))


def test_vq_training_uses_the_codebook(tmp_path):
    checkpoint = train_autoencoder(tiny_autoencoder_config(
        tmp_path, *TINY_VQ, "train.max_steps=60", "train.checkpoint_every=60",
        "loss.restart_unused_after=5",
        "loss.disc_start=1000"))
    records = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert '"codebook_usage"' in records[0] and '"perplexity"' in records[0]
    final = [r for r in records if "heldout_codebook_usage" in r][0]
    import json
    assert json.loads(final)["heldout_codebook_usage"] >= 0.9, final
    model = load_autoencoder(checkpoint)
    assert isinstance(model, AutoencoderVQ) and model.quantize.codebook_size == 32
    assert "latent_stats" in read_metadata(checkpoint)


def test_codebook_larger_than_the_data_is_refused(tmp_path):
    with pytest.raises(UserError, match="codebook_size=65536 exceeds"):
        train_autoencoder(tiny_autoencoder_config(tmp_path, "model.regularizer=vq",
                                                  "model.codebook_size=65536",
                                                  "data.holdout=1700"))


def test_codebook_of_another_size_in_a_checkpoint_is_refused(tmp_path, monkeypatch):
    checkpoint = train_autoencoder(tiny_autoencoder_config(tmp_path, *TINY_VQ, "train.max_steps=1"))
    import latentdiff.checkpoints.models as models
    real = models.from_dict
    monkeypatch.setattr(models, "from_dict", lambda cls, d: real(cls, {**d, "codebook_size": 64}))
    with pytest.raises(UserError, match="quantize.embedding.weight"):
        load_autoencoder(checkpoint)

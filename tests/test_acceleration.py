"""Speed settings change how fast a step runs, never what it computes; where the compiler is
missing, training continues eagerly after one line. CPU threads follow the CPUs really free."""

import logging

import pytest
import torch

from conftest import tiny_ldm_config
from latentdiff import acceleration, threads
from latentdiff.checkpoints import read_tensors
from latentdiff.config import UNetConfig
from latentdiff.train.diffusion import train_latent_diffusion
from latentdiff.unet import UNetModel

CFG = UNetConfig(in_channels=2, out_channels=2, model_channels=32, channel_mult=(1, 2),
                 num_res_blocks=1, attention_resolutions=(2,), head_channels=32, context_dim=16)


def gradients(model: UNetModel) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    x, t, context = torch.randn(3, 2, 8, 8), torch.tensor([1, 500, 999]), torch.randn(3, 5, 16)
    model.zero_grad()
    model(x, t, context=context).pow(2).mean().backward()
    return {k: p.grad.clone() for k, p in model.named_parameters()}


def test_gradient_checkpointing_and_channels_last_give_the_same_gradients():
    torch.manual_seed(0)
    model = UNetModel(CFG)
    plain = gradients(model)
    for variant in (model.gradient_checkpointing(), model.to(memory_format=torch.channels_last)):
        for key, value in gradients(variant).items():
            torch.testing.assert_close(value, plain[key], rtol=1e-4, atol=1e-6, msg=key)
    model.gradient_checkpointing(False)
    assert not any(getattr(m, "checkpointing", False) for m in model.modules())


def test_a_failing_compiler_falls_back_to_eager_with_one_line(monkeypatch, caplog):
    def broken(module):
        def call(*args, **kwargs):
            raise RuntimeError("backend compiler failed: cannot find cl.exe\ndetails")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    model = UNetModel(CFG).eval()
    wrapped = acceleration.compiled(model, True, torch.device("cpu"), "train.compile")
    x, t, context = torch.randn(2, 2, 8, 8), torch.tensor([3, 4]), torch.randn(2, 5, 16)
    with caplog.at_level(logging.WARNING):
        out = [wrapped(x, t, context=context), wrapped(x, t, context=context)]
    torch.testing.assert_close(out[0], model(x, t, context=context))
    notes = [r.getMessage() for r in caplog.records]
    assert notes == ["train.compile: torch.compile failed (backend compiler failed: cannot find "
                     "cl.exe); running eagerly"]
    assert wrapped.config is model.config


def test_training_without_a_c_compiler_runs_eagerly(tmp_path, trained_autoencoder, monkeypatch,
                                                    caplog):
    """train.compile=true where no C compiler exists: one line, then the same run as eager."""
    monkeypatch.setattr(acceleration.shutil, "which", lambda name: None)
    with caplog.at_level(logging.WARNING):
        compiled = train_latent_diffusion(tiny_ldm_config(tmp_path / "a", trained_autoencoder,
                                                          "train.max_steps=2", "train.compile=true"))
    assert any("train.compile: no C compiler" in r.getMessage() for r in caplog.records)
    eager = train_latent_diffusion(tiny_ldm_config(tmp_path / "b", trained_autoencoder,
                                                   "train.max_steps=2"))
    a, b = read_tensors(compiled, "unet."), read_tensors(eager, "unet.")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


@pytest.mark.slow
def test_compiled_training_matches_eager(tmp_path, trained_autoencoder):
    """torch.compile (inductor, this machine's C compiler) trains the same weights as eager, up to
    float reassociation."""
    runs = {name: train_latent_diffusion(tiny_ldm_config(tmp_path / name, trained_autoencoder,
                                                         "train.max_steps=3", *extra))
            for name, extra in (("eager", []), ("compiled", ["train.compile=true",
                                                             "train.channels_last=true"]))}
    a, b = read_tensors(runs["eager"], "unet."), read_tensors(runs["compiled"], "unet.")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-4, msg=key)


def test_threads_follow_the_free_cpus(monkeypatch):
    assert 1 <= threads.available_cpus() <= (torch.multiprocessing.cpu_count() or 1)
    assert 0.0 <= threads.busy_cpus(0.05) <= torch.multiprocessing.cpu_count()
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert threads.default_threads() == 3
    monkeypatch.delenv("OMP_NUM_THREADS")
    monkeypatch.setattr(threads, "available_cpus", lambda: 4)
    monkeypatch.setattr(threads, "busy_cpus", lambda: 1.2)
    assert threads.default_threads() == 3
    monkeypatch.setattr(threads, "busy_cpus", lambda: 3.9)
    assert threads.default_threads() == 1
    before = torch.get_num_threads()
    try:
        assert threads.configure_threads(1) == 1 and torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)

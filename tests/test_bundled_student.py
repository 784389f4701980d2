"""The shipped 4-step student of the bundled emoji model (`models/emoji-text-lcm-lora.safetensors`,
low-rank adapters that name the bundled teacher): it fits the size budget beside the teacher, loads
with the bundled model, samples with its own defaults (consistency sampling, 4 steps, s = 3, one
pass per step), and on fixed held-out prompts its alignment stays within the margin docs/few-step.md
states of the teacher's (DDIM, 50 guided steps) — a smoke check, not the evaluation
(reports/few-step)."""

import pytest
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.io import read_metadata
from latentdiff.checkpoints.models import BUNDLED_MODEL
from latentdiff.data.emoji import EMOJI_FONT
from latentdiff.evaluation.alignment import evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.pipelines import generate

STUDENT = BUNDLED_MODEL.with_name("emoji-text-lcm-lora.safetensors")
MARGIN = 0.10  # the student's alignment on these prompts is at least the teacher's minus this


def test_the_bundled_student_fits_the_budget_and_names_the_bundled_teacher():
    assert STUDENT.stat().st_size + BUNDLED_MODEL.stat().st_size < 30 * 2 ** 20
    metadata = read_metadata(STUDENT)
    assert metadata["teacher"] == "bundled" and metadata["lora_config"]["rank"] >= 1
    student = load_latent_diffusion(STUDENT)
    assert (student.student.sampler, student.student.steps, student.student.guidance_scale) == (
        "consistency", 4, 3.0)
    calls = []
    forward = student.unet.forward
    student.unet.forward = lambda x, *a, **k: calls.append(len(x)) or forward(x, *a, **k)
    images = generate(student, [0, 1, 2], prompts=["red heart", "cat face", "pizza"])
    assert calls == [3] * 4 and images.shape == (3, 3, 64, 64) and torch.isfinite(images).all()


@pytest.mark.slow
def test_the_bundled_students_alignment_stays_near_the_teachers():
    if not EMOJI_FONT.is_file():
        pytest.skip("Debian's fonts-noto-color-emoji is not installed (.ci/run installs it)")
    data_cfg = stored_data_config(STUDENT)
    teacher = evaluate_alignment(load_latent_diffusion(BUNDLED_MODEL), data_cfg, [3.0], n=96,
                                 sampler="ddim", steps=50)
    student = evaluate_alignment(load_latent_diffusion(STUDENT), data_cfg, [3.0], n=96)
    a_teacher, a_student = teacher.rows[0].alignment[0], student.rows[0].alignment[0]
    assert a_student >= a_teacher - MARGIN, (a_student, a_teacher)
    assert a_student > 4 * student.shuffled  # far above chance

"""Retrieval-augmented generation (Re-Imagen): the index returns the exact nearest neighbours, a
training image never retrieves itself, hidden references do not reach the network, interleaved
guidance alternates its two nulls in the ratio η, and a retrieval model trains, resumes, starts from
a text model and samples end to end."""

import math
import random
from collections import Counter

import pytest
import torch
from conftest import tiny_ldm_config
from test_conditional_train import SHAPES, TEXT, shapes_autoencoder  # noqa: F401

from latentdiff.checkpoints import load_latent_diffusion, read_tensors
from latentdiff.conditioning import Cond
from latentdiff.conditioning.retrieval import Query, RetrievalConditioner
from latentdiff.data import load_dataset, split_holdout
from latentdiff.errors import UserError
from latentdiff.guidance import InterleavedGuidedDenoiser
from latentdiff.pipelines import generate
from latentdiff.retrieval import TextIndex, words
from latentdiff.train.diffusion import train_latent_diffusion


def brute_force_neighbours(captions, query, k, exclude=None):
    """TF-IDF cosine written out with dictionaries, every row scored: the sorted (score, row) list."""
    docs = [Counter(words(c)) for c in captions]
    df = Counter(w for d in docs for w in d)
    idf = {w: math.log((1 + len(docs)) / (1 + n)) + 1 for w, n in df.items()}

    def vec(counts):
        v = {w: c * idf[w] for w, c in counts.items() if w in idf}
        norm = math.sqrt(sum(x * x for x in v.values())) or 1.0
        return {w: x / norm for w, x in v.items()}

    q = vec(Counter(words(query)))
    scored = [(sum(q.get(w, 0.0) * x for w, x in vec(d).items()), row)
              for row, d in enumerate(docs) if row != exclude]
    return sorted(scored, key=lambda s: (-s[0], s[1]))[:k]


def test_index_returns_the_exact_nearest_neighbours():
    rng = random.Random(0)
    vocabulary = ["woman", "man", "detective", "dark", "light", "medium", "skin", "tone", "flag",
                  "cat", "face", "red", "heart", "grinning", "pizza", "france"]
    captions = [" ".join(rng.choices(vocabulary, k=rng.randint(1, 6))) for _ in range(300)]
    index = TextIndex(captions)
    queries = [" ".join(rng.choices(vocabulary + ["unseen"], k=rng.randint(1, 5)))
               for _ in range(40)]
    found, scores = index.search(queries, k=5)
    for query, rows, row_scores in zip(queries, found.tolist(), scores.tolist()):
        expected = brute_force_neighbours(captions, query, 5)
        assert rows == [r for _, r in expected]
        assert row_scores == pytest.approx([s for s, _ in expected], abs=1e-5)
    # excluding each caption's own row: never returned, the rest unchanged
    rows, _ = index.search(captions[:30], k=3, exclude=torch.arange(30))
    for i, row in enumerate(rows.tolist()):
        assert i not in row and row == [r for _, r in brute_force_neighbours(captions, captions[i],
                                                                             3, exclude=i)]
    near, _ = TextIndex(["man detective dark skin tone", "red heart",
                         "woman detective medium skin tone", "cat face"]).search(
        ["woman detective medium-dark skin tone"], k=2)
    assert near.tolist() == [[2, 0]]
    with pytest.raises(ValueError):
        index.search(["cat"], k=301)


def retrieval_config(out_dir, autoencoder, *extra):
    return tiny_ldm_config(out_dir, autoencoder, *SHAPES, "unet.num_classes=null",
                           "conditioning.kind=retrieval", "conditioning.drop_prob=0.2",
                           "conditioning.retrieval.neighbours=2",
                           "conditioning.retrieval.drop_prob=0.3", *TEXT, *extra)


@pytest.fixture(scope="module")
def retrieval_model(tmp_path_factory, shapes_autoencoder):  # noqa: F811
    out = tmp_path_factory.mktemp("retrieval")
    return train_latent_diffusion(retrieval_config(out, shapes_autoencoder, "train.max_steps=2",
                                                   "train.sample_every=2",
                                                   "preview.guidance_scale=3"))


def test_a_retrieval_model_trains_checkpoints_and_samples(retrieval_model, shapes_autoencoder,  # noqa: F811
                                                          tmp_path):
    model = load_latent_diffusion(retrieval_model)
    conditioner = model.conditioner
    assert isinstance(conditioner, RetrievalConditioner)
    cfg = retrieval_config(tmp_path, shapes_autoencoder)
    train, held = split_holdout(load_dataset(cfg.data), cfg.data.holdout, cfg.data.split_seed)
    # the database is the training split: its captions and its normalised latents, stored
    assert conditioner.index.captions == list(train.captions)
    assert tuple(conditioner.database.shape) == (len(train), *model.latent_shape)
    assert "conditioner_ema.database" in read_tensors(retrieval_model)
    assert conditioner.database.abs().sum() > 0
    # a held-out prompt retrieves from it as the index does
    prompts = list(held.captions[:3])
    retrieved = conditioner.retrieve(prompts)
    torch.testing.assert_close(retrieved.neighbours, conditioner.index.search(prompts, 2)[0])
    assert retrieved.shown.all() and not conditioner.retrieve([""]).shown.any()
    # plain (text) guidance and interleaved guidance; one image does not depend on its batch
    for options in ({}, {"interleave": 0.5}):
        images = generate(model, seeds=[1, 2, 3], prompts=prompts, guidance_scale=3.0, steps=3,
                          **options)
        assert images.shape == (3, 3, 16, 16) and torch.isfinite(images).all()
        torch.testing.assert_close(images[2:], generate(model, seeds=[3], prompts=prompts[2:],
                                                        guidance_scale=3.0, steps=3, **options),
                                   atol=1e-5, rtol=1e-5)
    assert not torch.allclose(generate(model, seeds=[1], prompts=prompts[:1], guidance_scale=3.0,
                                       steps=3, interleave=0.0),
                              generate(model, seeds=[1], prompts=prompts[:1], guidance_scale=3.0,
                                       steps=3, interleave=1.0))
    with pytest.raises(UserError, match="η"):
        generate(model, seeds=[1], prompts=prompts[:1], guidance_scale=3.0, interleave=1.5)


def test_training_never_retrieves_itself_and_hidden_references_do_not_reach_the_network(
        retrieval_model):
    model = load_latent_diffusion(retrieval_model)
    conditioner = model.conditioner
    index = conditioner.index
    from latentdiff.data import ImageData
    data = ImageData(images=torch.zeros(len(index), 3, 16, 16, dtype=torch.uint8),
                     labels=torch.zeros(len(index), dtype=torch.long),
                     captions=tuple(index.captions))
    _, neighbours = conditioner.dataset_conditions(data)
    assert (neighbours != torch.arange(len(index))[:, None]).all()
    rows = torch.tensor([0, 5])
    drop, hide = torch.tensor([False, True]), torch.tensor([True, False])
    cond = conditioner.batch_condition(data, rows, None, None, (8, 8), drop, hide=hide)
    assert cond.tokens.shown.tolist() == [[False, False], [True, True]]
    assert (cond.tokens.ids[1] == conditioner.tokens([""]).ids[0]).all()  # the dropped prompt
    x, t = torch.randn(2, *model.latent_shape), torch.tensor([10, 10])

    def output():
        encoded = conditioner.encode(cond.tokens)
        return model.unet(x, t, context=encoded.context, context_mask=encoded.context_mask)

    before = output()
    conditioner.database.mul_(-3.0).add_(1.0)  # other reference images
    after = output()
    torch.testing.assert_close(after[0], before[0])  # hidden: the database does not matter
    assert not torch.allclose(after[1], before[1])


class TaggedDenoiser:
    """D(x; σ, c) = x + the condition's class label: the branch a guided call used is readable."""

    def __call__(self, x, sigma, cond=None):
        return x + cond.class_labels.to(x)[:, None]


def test_interleaved_guidance_alternates_its_two_nulls_in_the_ratio():
    cond, text_null, hidden = (Cond(class_labels=torch.tensor([v])) for v in (10, 1, 2))
    s = 3.0
    for ratio, pattern in ((0.5, [False, True] * 3), (1 / 3, [False, False, True] * 2),
                           (1.0, [True] * 6), (0.0, [False] * 6)):
        guided = InterleavedGuidedDenoiser(TaggedDenoiser(), text_null, hidden, ratio, s)
        x = torch.zeros(1, 1)
        for level, sigma in enumerate([5.0, 4.0, 3.0, 2.0, 1.0, 0.5]):
            for _ in range(2):  # a second call at the same σ (Heun's) stays on the same level
                null = 1.0 if pattern[level] else 2.0
                out = guided(x, torch.tensor(sigma), cond)
                assert out.item() == pytest.approx(null + s * (10.0 - null))
        assert guided.text_guided == pattern
    with pytest.raises(UserError):
        InterleavedGuidedDenoiser(TaggedDenoiser(), text_null, hidden, 1.5, s)


def test_queries_name_the_text_and_the_retrieval_prompt_separately(retrieval_model):
    conditioner = load_latent_diffusion(retrieval_model).conditioner
    prompt = conditioner.index.captions[7]
    assert conditioner.null_inputs([prompt]) == [Query("", prompt)]
    assert conditioner.reference_null_inputs([prompt]) == [Query(prompt, None)]
    text_null = conditioner.retrieve([Query("", prompt)])
    own = conditioner.retrieve([prompt])
    torch.testing.assert_close(text_null.neighbours, own.neighbours)
    assert (text_null.ids[0] == conditioner.tokens([""]).ids[0]).all()


def test_a_retrieval_model_starts_from_a_text_models_encoder(tmp_path, shapes_autoencoder):  # noqa: F811
    from test_conditional_train import conditional_config
    text = train_latent_diffusion(conditional_config(tmp_path / "text", shapes_autoencoder, "text",
                                                     "train.max_steps=2"))
    run = train_latent_diffusion(retrieval_config(tmp_path / "retrieval", shapes_autoencoder,
                                                  f"init_from={text}", "train.max_steps=1",
                                                  "train.lr=1e-12", "train.warmup_steps=0"))
    theirs, ours = read_tensors(text), read_tensors(run)
    encoder = [k for k in theirs if k.startswith("conditioner_ema.encoder.")]
    assert encoder
    for key in encoder:
        torch.testing.assert_close(ours[key], theirs[key], atol=1e-6, rtol=0)
    assert "conditioner_ema.latent_projection.weight" in ours


def test_cli_samples_with_interleaved_guidance_and_refuses_it_elsewhere(retrieval_model, tmp_path,
                                                                        capsys):
    from latentdiff.cli import main
    from latentdiff.config import LatentDiffusionTrainConfig, load_config
    out = tmp_path / "grid.png"
    prompt = load_latent_diffusion(retrieval_model).conditioner.index.captions[0]
    assert main(["sample", str(retrieval_model), "--prompt", prompt, "--guidance", "3",
                 "--interleave", "0.5", "--steps", "2", "--n", "2", "--out", str(out)]) == 0
    assert out.is_file()
    capsys.readouterr()
    assert main(["sample", "--prompt", "cat face", "--guidance", "3", "--interleave", "0.5",
                 "--steps", "2", "--n", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert "retrieval" in err and len(err.splitlines()) == 1
    with pytest.raises(UserError, match="streamed"):
        load_config(LatentDiffusionTrainConfig, "ldm-emoji-text",
                    ["conditioning.kind=retrieval", "data.dataset=folder", "data.path=x",
                     "data.stream=true"])


def test_an_exported_retrieval_model_keeps_its_database(retrieval_model, tmp_path):
    from latentdiff.checkpoints.models import export_latent_diffusion
    exported = load_latent_diffusion(export_latent_diffusion(retrieval_model, tmp_path / "r.safetensors",
                                                             "fp32"))
    model = load_latent_diffusion(retrieval_model)
    assert exported.conditioner.index.captions == model.conditioner.index.captions
    prompts = model.conditioner.index.captions[:2]
    torch.testing.assert_close(generate(exported, seeds=[4, 5], prompts=prompts, guidance_scale=2.0,
                                        steps=2, interleave=0.5),
                               generate(model, seeds=[4, 5], prompts=prompts, guidance_scale=2.0,
                                        steps=2, interleave=0.5))

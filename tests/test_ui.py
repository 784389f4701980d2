"""The web UI without a browser: PNG parameters, the model catalog and pool, jobs (every task, bad
input, cancel, progress), `latentdiff sample` writing the same parameters, and the load test through
the server's queue."""

import json
import sys
import threading

import numpy as np
import pytest
from PIL import Image
from ui_support import tiny_models

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.cli import main
from latentdiff.errors import UserError
from latentdiff.parameters import Parameters, model_hash, png_info, read_parameters
from latentdiff.ui.catalog import ModelEntry, ModelPool, discover, tasks
from latentdiff.ui.jobs import Cancelled, Request, run
from latentdiff.ui.load import ServerProcess


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    return tiny_models(tmp_path_factory.mktemp("ui") / "models")


def test_parameters_round_trip_through_png_text_chunks(tmp_path):
    p = Parameters(task="layout", model="m", model_hash="abc", prompt="ünïcode ✓", seed=7,
                   boxes=[[0.1, 0.2, 0.5, 0.6, 3]], sampler_options={"eta": 1.0})
    path = tmp_path / "a.png"
    Image.new("RGB", (4, 4)).save(path, pnginfo=png_info(p))
    assert read_parameters(path) == p
    text = Image.open(path).text
    assert text["prompt"] == "ünïcode ✓" and text["seed"] == "7" and text["model_hash"] == "abc"
    Image.new("RGB", (4, 4)).save(tmp_path / "plain.png")
    with pytest.raises(UserError, match="no latentdiff parameters"):
        read_parameters(tmp_path / "plain.png")
    Image.new("RGB", (4, 4)).save(tmp_path / "a.jpg")
    with pytest.raises(UserError, match="not a PNG"):
        read_parameters(tmp_path / "a.jpg")


def test_sample_writes_its_parameters_into_the_png(tmp_path):
    out = tmp_path / "s.png"
    assert main(["sample", "--prompt", "red heart", "--n", "2", "--steps", "2", "--seed", "5",
                 "--guidance", "2", "--out", str(out)]) == 0
    p = read_parameters(out)
    assert (p.prompt, p.seed, p.seeds, p.steps, p.sampler, p.guidance) == (
        "red heart", 5, [5, 6], 2, "ddim", 2.0)
    assert p.model == "emoji-text" and p.model_hash == model_hash(bundled_model())
    assert len(p.model_hash) == 12


def test_catalog_finds_models_and_skips_the_rest(tmp_path, models):
    folder = tmp_path / "models"
    (folder / "sub").mkdir(parents=True)
    (folder / "sub" / "a.safetensors").write_bytes(models["text"].read_bytes())
    (folder / "step-0000010.safetensors").write_bytes(models["text"].read_bytes())
    (folder / "notes.txt").write_text("x")
    (folder / "pipe").mkdir()
    (folder / "pipe" / "model_index.json").write_text("{}")
    (folder / "pipe" / "unet.safetensors").write_bytes(b"not a checkpoint")
    (folder / "sd.ckpt").write_bytes(b"an original checkpoint")
    (folder / "sd.yaml").write_text("model: {}")
    entries = discover([models["text"]], folder)
    assert [e.name for e in entries] == ["text", "pipe", "sd", "sub/a"]
    assert entries[2].config == folder / "sd.yaml" and entries[3].config is None
    assert discover([], None, [models["text"], models["text"]])[1].name == "text (2)"
    with pytest.raises(UserError, match="does not exist"):
        discover([tmp_path / "missing.safetensors"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no checkpoints found"):
        discover([], tmp_path / "empty")


def test_tasks_follow_the_conditioning_kind(models):
    expected = {"text": ("txt2img", "img2img", "inpaint"), "class": ("txt2img", "img2img", "inpaint"),
                "superres": ("upscale",), "layout": ("layout",), "semantic": ("semantic",),
                "inpaint": ("inpaint",)}
    for kind, path in models.items():
        assert tasks(load_latent_diffusion(path)) == expected[kind], kind


def test_pool_loads_each_model_once_and_keeps_at_most_capacity(models):
    loads = []

    def loader(entry, device):
        loads.append(entry.name)
        return load_latent_diffusion(entry.path, device)

    entries = [ModelEntry(k, p) for k, p in models.items()]
    pool = ModelPool(entries, capacity=2, loader=loader)
    threads = [threading.Thread(target=pool.get, args=("text",)) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert loads == ["text"]
    pool.get("layout"), pool.get("text"), pool.get("semantic")
    assert pool.loaded() == ["text", "semantic"] and loads == ["text", "layout", "semantic"]
    with pytest.raises(UserError, match="no model named"):
        pool.get("nope")


def _png(path, size=16, channels=3, seed=0):
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, channels), dtype=np.uint8)
    Image.fromarray(pixels.squeeze()).save(path)
    return str(path)


def test_jobs_run_every_task_and_write_parameters(tmp_path, models):
    image = _png(tmp_path / "in.png")
    label_map = tmp_path / "map.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(label_map)
    cases = {"text": [Request("txt2img", prompt="a red circle", batch=2, steps=2, seed=3,
                              guidance=2, width=32, height=16),
                      Request("img2img", prompt="a", image=image, strength=0.5, steps=4)],
             "superres": [Request("upscale", image=_png(tmp_path / "low.png", 8), steps=2)],
             "layout": [Request("layout", boxes="[[0.1, 0.1, 0.5, 0.5, 1]]", draw_boxes=True,
                                steps=2)],
             "semantic": [Request("semantic", label_map=str(label_map), steps=2)],
             "class": [Request("txt2img", class_label=3, steps=2)]}
    for kind, requests in cases.items():
        model = load_latent_diffusion(models[kind])
        for r in requests:
            seen = []
            results = run(model, ModelEntry(kind, models[kind]), r, tmp_path / "out",
                          progress=lambda i, n: seen.append((i, n)))
            assert len(results) == r.batch
            assert [i for i, _ in seen] == list(range(1, seen[-1][1] + 1))
            for k, result in enumerate(results):
                p = read_parameters(result.path)
                assert p == result.parameters and p.task == r.task and p.seed == r.seed + k
                assert p.model == kind and p.steps == r.steps
                assert Image.open(result.path).size == (p.width, p.height)
    assert (p.width, p.height) == (16, 16) and p.class_label == 3
    txt = [read_parameters(x) for x in sorted((tmp_path / "out").glob("txt2img-3-*"))]
    assert txt[0].prompt == "a red circle" and (txt[0].width, txt[0].height) == (32, 16)


def test_inpainting_job_keeps_every_unmasked_pixel(tmp_path, models):
    image = _png(tmp_path / "in.png")
    mask = np.zeros((16, 16), bool)
    mask[4:10, 5:12] = True
    for kind in ("text", "inpaint"):
        results = run(load_latent_diffusion(models[kind]), ModelEntry(kind, models[kind]),
                      Request("inpaint", prompt="x", image=image, mask=mask, steps=3),
                      tmp_path / kind)
        out, original = (np.asarray(Image.open(p)) for p in (results[0].path, image))
        assert (out[~mask] == original[~mask]).all()
        assert (out[mask] != original[mask]).any()


def test_bad_requests_are_one_line_errors_before_any_work(tmp_path, models):
    model = load_latent_diffusion(models["text"])
    entry = ModelEntry("text", models["text"])
    bomb = tmp_path / "bomb.png"
    Image.new("L", (3000, 3000)).save(bomb)  # 9 megapixels in a few kilobytes
    cases = {"unknown sampler": Request("txt2img", sampler="nope"),
             "batch size 9": Request("txt2img", batch=9),
             "size is 18×16, not a multiple of 4": Request("txt2img", width=18, height=16),
             "image is 18×18, not a multiple of 4 .*; crop or resize": Request(
                 "img2img", image=_png(tmp_path / "c.png", 18)),
             "above the server's limit": Request("txt2img", width=4096, height=4096),
             "no image uploaded": Request("img2img"),
             "no mask painted": Request("inpaint", image=_png(tmp_path / "a.png"),
                                        mask=np.zeros((16, 16), bool)),
             "but the image is": Request("inpaint", image=_png(tmp_path / "b.png"),
                                         mask=np.ones((8, 8), bool)),
             "megapixels": Request("img2img", image=str(bomb)),
             "does not do upscale": Request("upscale"),
             "steps 0 is outside": Request("txt2img", steps=0)}
    for message, r in cases.items():
        with pytest.raises(UserError, match=message):
            run(model, entry, r, tmp_path / "out", max_pixels=1 << 20)
    assert not (tmp_path / "out").exists()
    layout = load_latent_diffusion(models["layout"])
    with pytest.raises(UserError, match="the boxes is not JSON"):
        run(layout, ModelEntry("l", models["layout"]), Request("layout", boxes="[[0.1,"), tmp_path)
    with pytest.raises(UserError, match="pick a class"):
        run(load_latent_diffusion(models["class"]), ModelEntry("c", models["class"]),
            Request("txt2img"), tmp_path)


def test_a_cancelled_job_stops_at_the_next_step_and_writes_nothing(tmp_path, models):
    model = load_latent_diffusion(models["text"])
    steps = []
    with pytest.raises(Cancelled):
        run(model, ModelEntry("text", models["text"]), Request("txt2img", steps=50),
            tmp_path / "out", progress=lambda i, n: steps.append(i),
            should_stop=lambda: len(steps) >= 3)
    assert steps == [1, 2, 3] and not list(tmp_path.glob("out/*.png"))


@pytest.mark.slow
def test_twenty_concurrent_requests_through_the_queue_all_complete(tmp_path):
    """The load test of the issue on the bundled model: 20 users at once, 2 steps each; none lost,
    the server's memory after them within 200 MiB of its memory after one request."""
    pytest.importorskip("gradio_client", reason="needs the ui extra: pip install 'latentdiff[ui]'")
    from latentdiff.ui.load import run_load

    server = ServerProcess(log=tmp_path / "serve.log")
    try:
        run_load(server.url, users=1, steps=2)
        before = server.rss_mib()
        result = run_load(server.url, users=20, steps=2)
        after = server.rss_mib()
    finally:
        server.stop()
    print(json.dumps(result))
    assert (result["completed"], result["failed"], result["lost"]) == (20, 0, 0), result["errors"]
    assert after - before < 200, (before, after)


def test_serve_refuses_bad_arguments_on_one_line(tmp_path, capsys, monkeypatch):
    assert main(["serve", str(tmp_path / "missing.safetensors")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "f").write_text("x")
    assert main(["serve", "--models", str(tmp_path / "f")]) == 2
    assert "is not a folder" in capsys.readouterr().err
    assert main(["serve", "--keep-models", "0"]) == 2
    monkeypatch.setitem(sys.modules, "gradio", None)  # not installed
    assert main(["serve"]) == 2
    assert "pip install 'latentdiff[ui]'" in capsys.readouterr().err


def test_the_server_keeps_the_stop_flags_of_recent_sessions_only(models, tmp_path):
    pytest.importorskip("gradio", reason="needs the ui extra: pip install 'latentdiff[ui]'")
    from latentdiff.ui.server import Server

    server = Server(ModelPool([ModelEntry("text", models["text"])]), tmp_path, max_sessions=2)
    a = server.stop_flag("a")
    server.stop_flag("b"), server.stop_flag("a"), server.stop_flag("c")  # b is the least recent
    assert server.stop_flag("a") is a and list(server._stops) == ["c", "a"]

"""The web UI in a real browser: headless Chromium (Debian's `chromium`) driven by Playwright against
`latentdiff serve` started on a free local port with the bundled models and tiny models of every
other kind. Set LATENTDIFF_UI_SCREENSHOTS=FOLDER to keep the screenshots of each tab (docs/ui.md's
come from `LATENTDIFF_UI_SCREENSHOTS=docs/images/ui pytest tests/test_ui_browser.py`)."""

import io
import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from ui_support import tiny_models

from latentdiff.checkpoints.models import bundled_model
from latentdiff.parameters import Parameters, png_info
from latentdiff.ui.load import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [pytest.mark.skipif(CHROMIUM is None, reason="no Chromium here (Debian: apt-get "
                                 "install chromium); the browser tests drive the system browser"),
              pytest.mark.slow]
sync_api = pytest.importorskip("playwright.sync_api", reason="needs playwright (pip install "
                               "playwright; it drives the system's Chromium, no download)")
pytest.importorskip("gradio", reason="needs the ui extra: pip install 'latentdiff[ui]'")

# what the machine's closed network and a root user need (no sandbox, no calls home)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
TIMEOUT_MS = 120_000  # generous: a slow CI machine is not a failure


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("browser")
    tiny_models(folder / "tiny")
    bundled = bundled_model()
    process = ServerProcess(str(bundled), str(bundled.with_name("emoji-text-lcm-lora.safetensors")),
                           "--models", str(folder / "tiny"), "--max-upload-mb", "1",
                           log=folder / "serve.log")
    yield process
    process.stop()


@pytest.fixture(scope="module")
def browser():
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser, server):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.goto(server.url)
    page.wait_for_selector("#prompt textarea")
    page.wait_for_function("document.querySelector('#model-info').innerText.length > 0")
    yield page
    context.close()


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    folder = Path(os.environ.get("LATENTDIFF_UI_SCREENSHOTS") or tmp_path_factory.mktemp("shots"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _set_number(page, elem_id: str, value) -> None:
    field = page.locator(f"#{elem_id} input[type=number]")
    field.fill(str(value))
    field.press("Tab")  # a slider's box takes its value when it loses the focus


SOURCES = "[...new Set([...document.querySelectorAll('#gallery img')].map(x => x.src))]"


def _generate(page, count: int = 1) -> list:
    """Click Generate, wait until the gallery holds `count` new images; their PNGs as (pixels, text
    chunks), fetched from the server as a download would."""
    before = page.evaluate(SOURCES)
    page.click("#generate")
    page.wait_for_function(f"{SOURCES}.filter(x => !{before}.includes(x)).length >= {count}")
    images = []
    for src in page.evaluate(SOURCES):
        if src not in before:
            image = Image.open(io.BytesIO(page.request.get(src).body()))
            images.append((np.asarray(image.convert("RGB")), dict(image.text)))
    return images


def _choose_model(page, name: str) -> None:
    page.click("#model input")
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function(f"document.querySelector('#model-info').innerText.startsWith({name!r})")


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _visible_tabs(page) -> list[str]:
    return [t.inner_text() for t in page.locator("button[role=tab]").all() if t.is_visible()]


def test_text_to_image_gives_a_png_with_its_parameters(page, shots):
    page.fill("#prompt textarea", "red heart")
    _set_number(page, "steps", 10)
    _set_number(page, "seed", 42)
    _set_number(page, "batch", 4)
    images = _generate(page, 4)
    assert sorted(text["seed"] for _, text in images) == ["42", "43", "44", "45"]
    for pixels, text in images:
        assert pixels.shape == (64, 64, 3) and pixels.std() > 10
        assert (text["prompt"], text["steps"], text["sampler"]) == ("red heart", "10", "ddim")
        assert text["model"] == "emoji-text" and len(text["model_hash"]) == 12
        assert json.loads(text["guidance"]) == 3.0
    page.screenshot(path=shots / "txt2img.png", full_page=True)


def test_painted_mask_inpaints_and_keeps_the_rest_exactly(page, shots, tmp_path):
    _picture().save(tmp_path / "in.png")
    original = np.asarray(_picture())
    _tab(page, "Inpaint")
    page.set_input_files("#inpaint-image input[type=file]", str(tmp_path / "in.png"))
    page.fill("#prompt textarea", "red heart")
    _set_number(page, "steps", 10)
    canvas = page.locator("#mask-editor canvas").first
    page.wait_for_timeout(1500)  # the editor draws the uploaded background
    box = canvas.bounding_box()
    zoom = float(re.search(r"(\d+)%", page.locator("#mask-editor").inner_text()).group(1)) / 100
    side = 64 * zoom  # the image is shown centred at this zoom
    left, top = box["x"] + (box["width"] - side) / 2, box["y"] + (box["height"] - side) / 2
    page.mouse.move(left + 0.15 * side, top + 0.3 * side)
    page.mouse.down()
    for t in np.linspace(0, 1, 12):  # a stroke in the left third of the image
        page.mouse.move(left + (0.15 + 0.15 * t) * side, top + (0.3 + 0.4 * t) * side)
    page.mouse.up()
    (pixels, text), = _generate(page)
    assert text["task"] == "inpaint" and pixels.shape == original.shape
    changed = (pixels != original).any(-1)
    assert changed[:, :24].any(), "nothing was inpainted where the mask was painted"
    assert not changed[:, 32:].any(), "pixels outside the painted mask changed"
    page.screenshot(path=shots / "inpaint.png", full_page=True)


def test_img2img_from_an_upload(page, shots, tmp_path):
    _picture().save(tmp_path / "in.png")
    _tab(page, "Image to image")
    page.set_input_files("#img2img-image input[type=file]", str(tmp_path / "in.png"))
    page.fill("#prompt textarea", "red heart")
    _set_number(page, "steps", 10)
    _set_number(page, "strength", 0.7)
    (pixels, text), = _generate(page)
    assert pixels.shape == (64, 64, 3) and text["task"] == "img2img"
    assert json.loads(text["strength"]) == 0.7
    page.screenshot(path=shots / "img2img.png", full_page=True)


def _picture() -> Image.Image:
    """A 64×64 test picture: a colour gradient with a yellow disc."""
    y, x = np.mgrid[0:64, 0:64]
    pixels = np.stack([x * 4, y * 4, 255 - x * 2], -1).astype(np.uint8)
    pixels[(x - 32) ** 2 + (y - 32) ** 2 < 200] = [250, 200, 30]
    return Image.fromarray(pixels)


def test_bad_input_shows_a_message_in_the_page(page, tmp_path):
    noise = np.random.default_rng(0).integers(0, 256, (900, 900, 3), dtype=np.uint8)
    Image.fromarray(noise).save(tmp_path / "big.png")  # over the server's --max-upload-mb 1
    assert (tmp_path / "big.png").stat().st_size > 2**20
    _tab(page, "Image to image")
    page.set_input_files("#img2img-image input[type=file]", str(tmp_path / "big.png"))
    page.get_by_text(re.compile("exceed the maximum allowed size of 1.0 Mb")).first.wait_for()
    Image.new("L", (6000, 6000)).save(tmp_path / "bomb.png")  # 36 megapixels in a few kilobytes
    assert (tmp_path / "bomb.png").stat().st_size < 200_000
    page.set_input_files("#img2img-image input[type=file]", str(tmp_path / "bomb.png"))
    page.get_by_text(re.compile("6000×6000 .* above the limit")).first.wait_for()
    _tab(page, "Inpaint")
    page.click("#generate")
    page.get_by_text("no image uploaded; upload one first").first.wait_for()
    assert "Traceback" not in page.content()


def test_progress_bar_and_cancel(page):
    page.fill("#prompt textarea", "cat face")
    _set_number(page, "steps", 200)
    _set_number(page, "batch", 8)
    page.click("#generate")
    page.get_by_text(re.compile(r"step \d+/200")).first.wait_for()
    page.click("#cancel")
    page.get_by_text("cancelled").first.wait_for()
    assert page.locator("#gallery img").count() == 0
    _set_number(page, "steps", 4)  # the queue is free again
    _set_number(page, "batch", 1)
    assert len(_generate(page)) == 1


def test_reuse_parameters_from_a_result_and_from_a_dropped_png(page, tmp_path):
    page.fill("#prompt textarea", "pizza")
    _set_number(page, "steps", 6)
    _set_number(page, "seed", 77)
    _generate(page)
    page.fill("#prompt textarea", "something else")
    _set_number(page, "seed", 1)
    page.locator("#gallery img").first.click()
    page.wait_for_function("document.querySelector('#parameters').innerText.includes('pizza')")
    page.click("#reuse")
    page.wait_for_function("document.querySelector('#prompt textarea').value === 'pizza'")
    assert page.locator("#seed input").input_value() == "77"
    p = Parameters(model="emoji-text-lcm-lora", prompt="flag France", sampler="consistency",
                   steps=4, guidance=3.0, seed=1234)
    Image.new("RGB", (8, 8)).save(tmp_path / "made.png", pnginfo=png_info(p))
    page.set_input_files("#drop-png input[type=file]", str(tmp_path / "made.png"))
    page.wait_for_function("document.querySelector('#prompt textarea').value === 'flag France'")
    page.wait_for_function("document.querySelector('#model-info').innerText"
                           ".startsWith('emoji-text-lcm-lora')")
    assert page.locator("#seed input").input_value() == "1234"
    assert page.locator("#steps input[type=number]").input_value() == "4"
    (_, text), = _generate(page)  # the student, with the reused settings
    assert (text["model"], text["sampler"], text["steps"], text["seed"]) == (
        "emoji-text-lcm-lora", "consistency", "4", "1234")


def test_sessions_do_not_see_each_other(browser, server, page):
    page.fill("#prompt textarea", "red heart")
    _set_number(page, "steps", 4)
    _generate(page)
    other = browser.new_context().new_page()
    other.goto(server.url)
    other.wait_for_selector("#prompt textarea")
    assert other.locator("#gallery img").count() == 0
    other.context.close()


def test_each_model_shows_only_its_tabs(page, shots, tmp_path):
    Image.new("RGB", (8, 8), (200, 40, 40)).save(tmp_path / "low.png")
    expected = {"emoji-text": ["Text to image", "Image to image", "Inpaint"],
                "superres": ["Upscale"], "layout": ["Layout"], "semantic": ["Semantic map"],
                "inpaint": ["Inpaint"], "class": ["Text to image", "Image to image", "Inpaint"]}
    for name, tabs in expected.items():
        _choose_model(page, name)
        assert _visible_tabs(page) == tabs, name
        assert page.locator("#class").is_visible() == (name == "class")
        assert page.locator("#prompt").is_visible() == (name == "emoji-text")
    _set_number(page, "steps", 2)
    (pixels, text), = _generate(page)
    assert pixels.shape == (16, 16, 3) and text["class_label"] == "0"
    page.screenshot(path=shots / "class.png", full_page=True)
    _choose_model(page, "superres")
    page.set_input_files("#lowres input[type=file]", str(tmp_path / "low.png"))
    _set_number(page, "steps", 2)
    (pixels, text), = _generate(page)
    assert pixels.shape == (16, 16, 3) and text["task"] == "upscale"
    page.screenshot(path=shots / "upscale.png", full_page=True)
    _choose_model(page, "layout")
    page.screenshot(path=shots / "layout.png", full_page=True)
    _choose_model(page, "semantic")
    page.screenshot(path=shots / "semantic.png", full_page=True)

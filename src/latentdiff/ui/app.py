"""The page of `latentdiff serve`, on Gradio: a model switcher, the prompt (or class) and sampling
settings, one tab per task the chosen model supports, and the session's gallery with each image's
parameters and a "reuse" action.

Every job goes through one queue (one job at a time on the shared model pool; other users wait and
see their position); a job reports each sampler step to its progress bar and stops at the next step
when its session presses cancel. Bad input shows a one-line message in the page
(`UserError` → `gr.Error`); an internal error shows its type and message, never a traceback.
"""

import json
import logging
import random
from pathlib import Path

import gradio as gr
import numpy as np

from latentdiff.errors import UserError
from latentdiff.images import MAX_PIXELS, check_image
from latentdiff.parameters import Parameters, read_parameters
from latentdiff.samplers import SAMPLERS
from latentdiff.ui.catalog import TASKS, ModelPool, tasks
from latentdiff.ui.jobs import MAX_BATCH, class_choices, parameters_json
from latentdiff.ui.server import Server, default_guidance

log = logging.getLogger(__name__)

TAB_NAMES = {"txt2img": "Text to image", "img2img": "Image to image", "inpaint": "Inpaint",
             "upscale": "Upscale", "layout": "Layout", "semantic": "Semantic map"}
QUEUE = "model"  # the concurrency group of everything that runs on the model pool
PRIVATE = {"api_visibility": "private"}  # the page's own events; the API is `txt2img`
# quick events that may show a message: queued (where messages are shown) but never waiting for jobs
LIGHT = {"concurrency_limit": None, **PRIVATE}


def _gallery(history: list) -> list:
    return [(item["path"], item["parameters"].get("prompt") or item["parameters"]["task"])
            for item in history]


def _checked_image(server: Server, path: str | None) -> str | None:
    """An uploaded image, refused in the page when it is too large or unreadable."""
    if path:
        try:
            check_image(path, server.max_pixels)
        except UserError as e:
            raise gr.Error(str(e).replace(str(Path(path).parent) + "/", ""),
                           print_exception=False) from None
    return path


def model_view(server: Server, name: str) -> dict:
    """{field: value or update} for model `name`: the tabs it supports, its condition inputs (prompt,
    class) and its sampling defaults (a student's own sampler, steps and guidance)."""
    try:
        model = server.model(name)
    except UserError as e:
        raise gr.Error(str(e), print_exception=False) from None
    supported = tasks(model)
    defaults = model.sampling_defaults
    kind = model.conditioner.kind if model.conditioner is not None else None
    classes = class_choices(model) if model.num_classes is not None else []
    student = model.student is not None and model.unet.config.guidance_embedding
    step = model.size_multiple
    what = kind or ("class-conditional" if classes else "unconditional")
    info = (f"{name}: {what}, "
            f"{model.image_size} px; tasks: {', '.join(TAB_NAMES[t] for t in supported)}"
            f"{'; a few-step student' if model.student is not None else ''}")
    # "hidden", not False: Gradio 6 does not hide a tab that was rendered visible on False
    return {**{f"tab-{t}": gr.update(visible=True if t in supported else "hidden") for t in TASKS},
            "tabs": gr.update(selected=supported[0]), "task": supported[0], "info": info,
            "prompt": gr.update(visible=kind == "text"),
            "negative": gr.update(visible=kind == "text" and not student),
            "class": gr.update(choices=classes, value=classes[0][1] if classes else None,
                               visible=bool(classes)),
            "sampler": defaults["sampler"], "steps": defaults["steps"],
            "guidance": default_guidance(model), "rescale": gr.update(value=0.0, visible=not student),
            # one update each: Gradio consumes an update's dict
            **{side: gr.update(value=model.image_size, step=step, minimum=step)
               for side in ("width", "height")}}


def reuse_view(server: Server, parameters: Parameters, current_model: str) -> dict:
    """`model_view` of the parameters' model (the current one when the server lacks it) with the
    parameters' values in place of the defaults."""
    p = parameters
    model = p.model if p.model in server.pool.names else current_model
    if p.model not in server.pool.names:
        gr.Warning(f"this server has no model named {p.model!r}; the settings are applied to "
                   f"{current_model}")
    view = model_view(server, model)
    values = {"model": model, "prompt": p.prompt or "", "negative": p.negative_prompt or "",
              "sampler": p.sampler, "steps": p.steps, "guidance": p.guidance,
              "rescale": p.guidance_rescale, "seed": p.seed, "boxes": json.dumps(p.boxes or []),
              "class": p.class_label, **{k: getattr(p, k) for k in ("width", "height", "strength")}}
    task = p.task if p.task in TASKS else "txt2img"
    view["tabs"], view["task"] = gr.update(selected=task), task
    for key, value in values.items():
        if value is None:
            continue
        view[key] = {**view[key], "value": value} if isinstance(view.get(key), dict) else value
    return view


def build(server: Server, title: str = "latentdiff") -> gr.Blocks:
    """The page. Components have elem_ids (the browser tests find them by these)."""
    first = server.pool.names[0]
    view = model_view(server, first)  # the page starts with the first model's view

    def start(key: str) -> dict:
        """`view[key]` as constructor arguments."""
        value = view[key]
        if isinstance(value, dict):
            return {k: v for k, v in value.items() if k != "__type__"}
        return {"value": value}

    def tab_of(task: str) -> gr.Tab:
        return gr.Tab(TAB_NAMES[task], id=task, elem_id=f"tab-{task}", **start(f"tab-{task}"))
    # Gradio's copies of the results older than a day are deleted every hour (disk stays bounded)
    with gr.Blocks(title=title, analytics_enabled=False, delete_cache=(3600, 86400)) as page:
        history = gr.State([])
        selected = gr.State(None)  # the gallery's selected image
        current_tab = gr.State(view["task"])
        gr.Markdown(f"## {title}: latent diffusion models")
        with gr.Row():
            model = gr.Dropdown(server.pool.names, value=first, label="Model", elem_id="model",
                                scale=2)
            info = gr.Markdown(elem_id="model-info", **start("info"))
        with gr.Row():
            with gr.Column(scale=3):
                prompt = gr.Textbox(label="Prompt", lines=2, elem_id="prompt", **start("prompt"))
                negative = gr.Textbox(label="Negative prompt", elem_id="negative",
                                      **start("negative"))
                class_label = gr.Dropdown(label="Class", elem_id="class", **start("class"))
                with gr.Tabs(**start("tabs")) as tabs:
                    tab = {}
                    with tab_of("txt2img") as tab["txt2img"]:
                        with gr.Row():
                            width = gr.Slider(maximum=1024, label="Width", elem_id="width",
                                              **start("width"))
                            height = gr.Slider(maximum=1024, label="Height", elem_id="height",
                                               **start("height"))
                    with tab_of("img2img") as tab["img2img"]:
                        image = gr.Image(type="filepath", image_mode=None, label="Image",
                                         elem_id="img2img-image")
                        strength = gr.Slider(0.01, 1, 0.6, label="Strength (1: all noise)",
                                             elem_id="strength")
                    with tab_of("inpaint") as tab["inpaint"]:
                        inpaint_image = gr.Image(type="filepath", image_mode=None,
                                                 label="Image to inpaint", elem_id="inpaint-image")
                        editor = gr.ImageEditor(
                            label="Paint the parts to regenerate (the rest is kept exactly)",
                            type="numpy", image_mode="RGBA", format="png", sources=(),
                            layers=False, transforms=(), elem_id="mask-editor",
                            brush=gr.Brush(colors=["#ff00ff"], color_mode="fixed",
                                           default_size=8),
                            eraser=gr.Eraser(default_size=8))
                    with tab_of("upscale") as tab["upscale"]:
                        lowres = gr.Image(type="filepath", image_mode=None,
                                          label="Low-resolution image", elem_id="lowres")
                    with tab_of("layout") as tab["layout"]:
                        boxes = gr.Textbox(label="Boxes: JSON [[x0, y0, x1, y1, class], …] in 0…1",
                                           value="[[0.1, 0.1, 0.5, 0.5, 0]]", elem_id="boxes")
                        show_boxes = gr.Checkbox(label="Draw the boxes on the result")
                    with tab_of("semantic") as tab["semantic"]:
                        label_map = gr.File(label="Semantic map (PNG of class ids)",
                                            file_types=[".png"], type="filepath")
                with gr.Accordion("Sampling", open=True):
                    with gr.Row():
                        sampler = gr.Dropdown(list(SAMPLERS), **start("sampler"), label="Sampler",
                                              elem_id="sampler")
                        steps = gr.Slider(1, 200, step=1, label="Steps", elem_id="steps",
                                          **start("steps"))
                        batch = gr.Slider(1, MAX_BATCH, 1, step=1, label="Batch size",
                                          elem_id="batch")
                    with gr.Row():
                        guidance = gr.Slider(0, 20, step=0.1, **start("guidance"),
                                             label="Guidance scale",
                                             elem_id="guidance")
                        rescale = gr.Slider(0, 1, step=0.05, **start("rescale"),
                                            label="Guidance rescale",
                                            elem_id="rescale")
                    with gr.Row():
                        seed = gr.Number(0, label="Seed", precision=0, elem_id="seed", minimum=0)
                        dice = gr.Button("🎲 random seed", elem_id="random-seed", size="sm")
                with gr.Row():
                    run_button = gr.Button("Generate", variant="primary", elem_id="generate")
                    cancel = gr.Button("Cancel", variant="stop", elem_id="cancel")
            with gr.Column(scale=2):
                gallery = gr.Gallery(label="This session's results", columns=3, format="png",
                                     elem_id="gallery", buttons=["download", "fullscreen"],
                                     interactive=False)
                shown = gr.Code(label="Parameters of the selected image", language="json",
                                elem_id="parameters")
                reuse = gr.Button("Reuse these parameters", elem_id="reuse")
                dropped = gr.File(label="…or drop a PNG made by latentdiff to reuse its parameters",
                                  file_types=[".png"], type="filepath", elem_id="drop-png")

        shown_for_model = {**{f"tab-{t}": tab[t] for t in TASKS}, "tabs": tabs, "info": info,
                           "prompt": prompt, "negative": negative, "class": class_label,
                           "sampler": sampler, "steps": steps, "guidance": guidance,
                           "rescale": rescale, "width": width, "height": height,
                           "task": current_tab}

        def show_model(name):
            view = model_view(server, name)
            return [view[k] for k in shown_for_model]

        model.input(show_model, model, list(shown_for_model.values()), concurrency_id=QUEUE,
                    **PRIVATE)
        dice.click(lambda: random.randrange(2 ** 32), None, seed, queue=False, **PRIVATE)
        for upload in (image, lowres):
            upload.upload(lambda p: _checked_image(server, p), upload, upload, **LIGHT)
        inpaint_image.upload(
            lambda p: {"background": _checked_image(server, p), "layers": [], "composite": p},
            inpaint_image, editor, **LIGHT)

        fields = {"prompt": prompt, "negative_prompt": negative, "class_label": class_label,
                  "sampler": sampler, "steps": steps, "guidance": guidance,
                  "guidance_rescale": rescale, "seed": seed, "batch": batch}
        task_fields = {"txt2img": {"width": width, "height": height},
                       "img2img": {"image": image, "strength": strength},
                       "inpaint": {"image": inpaint_image, "mask": editor},
                       "upscale": {"image": lowres}, "layout": {"boxes": boxes,
                                                               "draw_boxes": show_boxes},
                       "semantic": {"label_map": label_map}}
        for task in TASKS:
            tab[task].select(lambda t=task: t, None, current_tab, queue=False, **PRIVATE)

        inputs = {current_tab, model, history, *fields.values(),
                  *(c for t in TASKS for c in task_fields[t].values())}

        def submit(data: dict, request: gr.Request, progress=gr.Progress()):
            task = data[current_tab]
            values = {k: data[c] for k, c in {**fields, **task_fields[task]}.items()}
            if "mask" in values:
                values["mask"] = _painted(values["mask"])
            updated = server.generate(task, data[model], values, data[history], request, progress)
            return updated, _gallery(updated)

        run_button.click(server.arm, None, None, queue=False, **PRIVATE).then(
            submit, inputs, [history, gallery], concurrency_id=QUEUE, **PRIVATE)
        cancel.click(server.cancel, None, None, queue=False, **PRIVATE)

        def select(history_value, evt: gr.SelectData):
            item = history_value[evt.index]
            return evt.index, parameters_json(Parameters(**item["parameters"]))

        gallery.select(select, history, [selected, shown], queue=False, **PRIVATE)
        reused = {**shown_for_model, "model": model, "seed": seed, "strength": strength,
                  "boxes": boxes}

        def apply(parameters: Parameters, model_name: str) -> list:
            view = reuse_view(server, parameters, model_name)
            return [view.get(k, gr.skip()) for k in reused]

        def reuse_selected(index, history_value, model_name):
            if index is None or index >= len(history_value):
                raise gr.Error("select an image in the gallery first", print_exception=False)
            return apply(Parameters(**history_value[index]["parameters"]), model_name)

        def reuse_dropped(path, model_name):
            try:
                return apply(read_parameters(path), model_name)
            except UserError as e:
                raise gr.Error(str(e), print_exception=False) from None

        outputs = list(reused.values())
        reuse.click(reuse_selected, [selected, history, model], outputs, concurrency_id=QUEUE,
                    **PRIVATE)
        dropped.upload(reuse_dropped, [dropped, model], outputs, concurrency_id=QUEUE, **PRIVATE)
        gr.api(server.txt2img, api_name="txt2img", concurrency_id=QUEUE)
    return page


def _painted(value: dict | None) -> np.ndarray | None:
    """The mask the user painted: (H, W) bool, True where any layer is not transparent."""
    if not value or not value.get("layers"):
        return None
    alpha = [np.asarray(layer)[..., 3] > 0 for layer in value["layers"] if layer is not None]
    return np.logical_or.reduce(alpha) if alpha else None


def launch(pool: ModelPool, outputs: Path, host: str = "127.0.0.1", port: int = 7860,
           max_pixels: int = MAX_PIXELS, max_upload_mb: int = 16, queue_size: int = 64,
           max_sessions: int = 1000) -> None:
    """Load the first model (a bad checkpoint fails here, on one line), then serve until Ctrl-C:
    one job at a time on the pool, at most `queue_size` waiting, uploads up to `max_upload_mb`."""
    from PIL import Image

    # uploads are checked against max_pixels by our loader before they are decoded; PIL's own
    # check would raise first, in Gradio's code, with no message for the page
    Image.MAX_IMAGE_PIXELS = None
    server = Server(pool, outputs, max_pixels, max_sessions)
    server.model(pool.names[0])
    page = build(server)
    page.queue(default_concurrency_limit=1, max_size=queue_size)
    print(f"latentdiff serve: http://{host}:{port} ({len(pool.names)} models; Ctrl-C stops)",
          flush=True)
    page.launch(server_name=host, server_port=port, share=False, max_file_size=f"{max_upload_mb}mb",
                show_error=False, ssr_mode=False, mcp_server=False, quiet=True,
                allowed_paths=[str(outputs)], state_session_capacity=max_sessions)

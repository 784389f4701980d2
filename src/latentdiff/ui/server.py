"""What the events of the page share (`Server`): the model pool, the output folder, each
session's stop flag and the one thread that runs every model call; and the HTTP API `txt2img`."""

import contextvars
import logging
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict
from pathlib import Path

import gradio as gr
from gradio import FileData

from latentdiff.errors import UserError
from latentdiff.images import MAX_PIXELS
from latentdiff.ui.catalog import ModelPool
from latentdiff.ui.jobs import Cancelled, Request, run

log = logging.getLogger(__name__)

HISTORY = 64  # results a session's gallery keeps (the oldest leave first)
PROGRESS_INTERVAL = 0.2  # seconds between progress messages to the page


class Server:
    """What the page's events share: the model pool, the output folder, each session's stop flag,
    and the one thread that runs every model call.

    One thread for all model work, not Gradio's pool of worker threads, and none on the main
    thread: each thread that runs a torch operator starts an OpenMP team of its own, and a second
    team ran the bundled model 3.4× slower (reports/model-thread)."""

    def __init__(self, pool: ModelPool, outputs: Path, max_pixels: int = MAX_PIXELS,
                 max_sessions: int = 1000):
        self.pool, self.outputs, self.max_pixels = pool, Path(outputs), max_pixels
        self.max_sessions = max_sessions
        self._stops: OrderedDict[str, threading.Event] = OrderedDict()  # the recent sessions'
        self._lock = threading.Lock()
        self._model_thread = ThreadPoolExecutor(1, thread_name_prefix="latentdiff-model")

    def on_model_thread(self, function, *args):
        """function(*args) on the model thread, in the caller's context (a job's progress bar)."""
        return self._model_thread.submit(contextvars.copy_context().run, function, *args).result()

    def model(self, name: str):
        return self.on_model_thread(self.pool.get, name)

    def stop_flag(self, session: str) -> threading.Event:
        """The session's cancel flag (the `max_sessions` most recent sessions keep theirs)."""
        with self._lock:
            flag = self._stops.setdefault(session, threading.Event())
            self._stops.move_to_end(session)
            while len(self._stops) > self.max_sessions:
                self._stops.popitem(last=False)
            return flag

    def cancel(self, request: gr.Request) -> None:
        """Stop the session's job at its next step, or before its first when it still waits."""
        self.stop_flag(request.session_hash).set()

    def arm(self, request: gr.Request) -> None:
        """A job is submitted: a cancel before this one no longer counts."""
        self.stop_flag(request.session_hash).clear()

    def generate(self, task: str, model_name: str, values: dict, history: list,
                 request: gr.Request, progress: gr.Progress) -> list:
        """Run one job; the session's history with the new images first."""
        stop = self.stop_flag(request.session_hash)  # cleared when the job was submitted (`arm`)
        r = Request(task=task, **values)
        try:
            model = self.model(model_name)
            results = self.on_model_thread(
                run, model, self.pool.entry(model_name), r, self.outputs / request.session_hash,
                _every(PROGRESS_INTERVAL, lambda i, n: progress((i, n), desc=f"step {i}/{n}",
                                                                 unit="steps")),
                stop.is_set, self.max_pixels)
        except Cancelled:
            gr.Info("cancelled")
            return history
        except UserError as e:
            raise gr.Error(str(e), print_exception=False) from None
        except Exception as e:  # noqa: BLE001 — the page gets one line, the log the traceback
            log.exception("job failed")
            raise gr.Error(f"internal error ({type(e).__name__}: {str(e)[:200]}); the server's "
                           "log has the details", print_exception=False) from None
        new = [{"path": str(x.path), "parameters": asdict(x.parameters)} for x in results]
        return (new + history)[:HISTORY]

    def txt2img(self, prompt: str = "", negative_prompt: str = "", model: str = "",
                sampler: str = "", steps: int = 0, guidance: float = -1.0,
                guidance_rescale: float = 0.0, seed: int = 0, batch: int = 1, width: int = 0,
                height: int = 0, request: gr.Request = None) -> list[FileData]:
        """The HTTP API (gradio_client: `Client(url).predict(prompt=..., api_name="/txt2img")`):
        text-to-image through the page's queue; the PNG files, parameters in their text chunks.
        Empty or zero arguments take the model's defaults (the first model, its sampler, steps
        and guidance, its training size)."""
        name = model or self.pool.names[0]
        loaded = self.model(name)
        defaults = loaded.sampling_defaults
        values = {"prompt": prompt, "negative_prompt": negative_prompt,
                  "sampler": sampler or defaults["sampler"], "steps": steps or defaults["steps"],
                  "guidance": default_guidance(loaded) if guidance < 0 else guidance,
                  "guidance_rescale": guidance_rescale, "seed": seed, "batch": batch,
                  "width": width or None, "height": height or None}
        self.arm(request)
        results = self.generate("txt2img", name, values, [], request, gr.Progress())
        return [FileData(path=item["path"]) for item in results]


def _every(seconds: float, report):
    """report(i, n), but at most once per `seconds` (and always at the first step): each update is
    a message to the page."""
    last = [-float("inf")]

    def throttled(i: int, n: int) -> None:
        now = time.monotonic()
        if now - last[0] >= seconds:
            last[0] = now
            report(i, n)

    return throttled


def default_guidance(model) -> float:
    """The page's starting guidance scale: a student's own; 3 for models trained with condition
    dropout (what the bundled model's quick start uses); otherwise 1 (no guidance)."""
    if model.student is not None or not model.trained_with_null:
        return float(model.sampling_defaults["guidance_scale"])
    return 3.0

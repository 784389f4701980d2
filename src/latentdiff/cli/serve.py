"""`latentdiff serve [CHECKPOINT ...]`: the web UI (needs the `ui` extra: pip install
'latentdiff[ui]')."""

import argparse
import os
import shutil
import tempfile
from pathlib import Path

from latentdiff.cli.arguments import add_device, positive_int
from latentdiff.errors import UserError

SERVE_MAX_PIXELS = 1024 * 1024  # the server's default limit on uploads and sample sizes


def add_serve(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser("serve", help="the web UI in a browser", description=(
        "Serve the web UI (Gradio): text-to-image, img2img, inpainting with a painted mask, "
        "upscaling, layouts and semantic maps, for the tasks each model supports. Binds "
        "127.0.0.1 unless --host says otherwise. Needs: pip install 'latentdiff[ui]'."))
    p.add_argument("checkpoints", type=Path, nargs="*",
                   help="models to offer (latentdiff, Stable Diffusion / CompVis files, diffusers "
                        "folders; default: the bundled emoji model and its 4-step student)")
    p.add_argument("--models", type=Path, default=None,
                   help="also offer every model in this folder and its subfolders")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default: 127.0.0.1, this machine only; 0.0.0.0 exposes "
                        "the server to the network)")
    p.add_argument("--port", type=positive_int, default=7860, help="port (default: 7860)")
    p.add_argument("--outputs", type=Path, default=None,
                   help="keep every generated PNG in this folder, one subfolder per browser "
                        "session (default: a temporary folder removed at exit)")
    p.add_argument("--max-pixels", type=positive_int, default=SERVE_MAX_PIXELS,
                   help="refuse uploads and sizes of more pixels than this "
                        f"(default: {SERVE_MAX_PIXELS}, 1024×1024)")
    p.add_argument("--max-upload-mb", type=positive_int, default=16,
                   help="refuse uploaded files larger than this (default: 16 MB)")
    p.add_argument("--queue-size", type=positive_int, default=64,
                   help="jobs that may wait in the queue; more are refused with a message "
                        "(default: 64)")
    p.add_argument("--max-sessions", type=positive_int, default=1000,
                   help="browser sessions whose state (gallery, settings) the server keeps; the "
                        "least recent beyond this are forgotten (default: 1000)")
    p.add_argument("--keep-models", type=positive_int, default=2,
                   help="models kept loaded at once (default: 2)")
    add_device(p)
    p.set_defaults(func=serve)


def serve(args: argparse.Namespace) -> None:
    from latentdiff.checkpoints.models import bundled_model
    from latentdiff.cli.commands import device

    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no calls home from a closed network
    try:
        import gradio  # noqa: F401
    except ImportError:
        raise UserError("the web UI needs Gradio: pip install 'latentdiff[ui]'") from None
    from latentdiff.ui.catalog import ModelPool, discover
    from latentdiff.ui.app import launch

    if args.outputs is not None and args.outputs.exists() and not args.outputs.is_dir():
        raise UserError(f"--outputs {args.outputs} is a file; give a folder")
    bundled = bundled_model()
    student = bundled.with_name("emoji-text-lcm-lora.safetensors")
    entries = discover(args.checkpoints, args.models,
                       [p for p in (bundled, student) if p.is_file()])
    pool = ModelPool(entries, device(args), args.keep_models)
    outputs = args.outputs or Path(tempfile.mkdtemp(prefix="latentdiff-serve-"))
    try:
        launch(pool, outputs, args.host, args.port, args.max_pixels, args.max_upload_mb,
               args.queue_size, args.max_sessions)
    finally:
        if args.outputs is None:
            shutil.rmtree(outputs, ignore_errors=True)

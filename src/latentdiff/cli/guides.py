"""The command line of the guidance family (docs/guidance.md): `latentdiff train-classifier`, and
the sampling options that load a classifier, an autoguidance model or an unconditional prior."""

import argparse
from pathlib import Path

from latentdiff.cli.arguments import add_no_verify, non_negative
from latentdiff.errors import UserError


def add_guides(p: argparse.ArgumentParser, prior_only: bool = False) -> None:
    """--classifier/--classifier-scale/--entropy-aware/--autoguide (sample) and --prior/
    --prior-weight (sample and the conditional tasks)."""
    if not prior_only:
        p.add_argument("--classifier", type=Path, default=None,
                       help="classifier guidance with this `latentdiff train-classifier` checkpoint "
                            "towards --class (or one row per class)")
        p.add_argument("--classifier-scale", type=non_negative, default=1.0,
                       help="classifier guidance scale s (default: 1)")
        p.add_argument("--entropy-aware", action="store_true",
                       help="scale the classifier guidance per sample by log K / H(p) (EDS)")
        p.add_argument("--autoguide", type=Path, default=None,
                       help="autoguidance: guide away from this smaller or less-trained model of "
                            "the same kind instead of the unconditional branch (--guidance s)")
        p.add_argument("--guide-text", default=None,
                       help="semantic guidance towards a text (needs --clip)")
        p.add_argument("--guide-content", type=Path, default=None,
                       help="semantic guidance towards an image's content (its embedding)")
        p.add_argument("--guide-style", type=Path, default=None,
                       help="semantic guidance towards an image's style (feature statistics)")
        for what in ("text", "content", "style"):
            p.add_argument(f"--guide-{what}-scale", type=non_negative, default=10.0,
                           help=f"the {what} guidance scale (default: 10)")
        p.add_argument("--guide-step", choices=("x0", "tilt"), default="x0",
                       help="semantic guidance's step: move the clean estimate (x0, default) or "
                            "the exact tilt σ²·∇_x g (docs/guidance.md)")
        p.add_argument("--clip", type=Path, default=None,
                       help="a local transformers CLIPModel folder for semantic guidance "
                            "(default: the project's evaluator network of the model's data)")
    p.add_argument("--prior", type=Path, default=None,
                   help="an unconditional model of the same latent space mixed into every step "
                        "(super-resolution, inpainting)")
    p.add_argument("--prior-weight", type=float, default=-0.5,
                   help="the prior's weight w ≤ 1: (1 − w)·D_c + w·D_u; below 0 guides away from "
                        "it (default: −0.5, docs/guidance.md)")


def load_guides(args: argparse.Namespace, model, load, dev: str):
    """The `Guides` the options ask for, loaded on `dev`; `load(args, path, dev)` loads a model."""
    from latentdiff.checkpoints.models import load_classifier
    from latentdiff.pipelines.guides import Guides

    files = {name: getattr(args, name, None) for name in ("classifier", "autoguide", "prior")}
    for name, path in files.items():
        if path is not None and not Path(path).exists():
            raise UserError(f"--{name} {path} does not exist; give a checkpoint")
    classifier = None
    if files["classifier"] is not None:
        classifier = load_classifier(files["classifier"], model, dev)
    semantic, embedder = _semantic(args, model, files)
    return Guides(classifier=classifier, semantic=semantic, embedder=embedder,
                  classifier_scale=getattr(args, "classifier_scale", 1.0),
                  entropy_aware=getattr(args, "entropy_aware", False),
                  autoguide=None if files["autoguide"] is None else load(args, files["autoguide"], dev),
                  prior=None if files["prior"] is None else load(args, files["prior"], dev),
                  prior_weight=args.prior_weight,
                  files={k: str(v) for k, v in files.items() if v is not None})


def _semantic(args: argparse.Namespace, model, files: dict):
    """(SemanticTargets, embedder) of --guide-text/--guide-content/--guide-style, or (None, None)."""
    text, content, style = (getattr(args, f"guide_{w}", None) for w in ("text", "content", "style"))
    if text is None and content is None and style is None:
        return None, None
    from latentdiff.data import to_model_range
    from latentdiff.images import load_image
    from latentdiff.semantic_guidance import ClipEmbedder, EvaluatorEmbedder, SemanticTargets

    if args.clip is not None:
        embedder, channels = ClipEmbedder(args.clip, model.device), 3
        files["clip"] = str(args.clip)
    else:
        from latentdiff.metrics.classifier import load_or_train_classifier

        data = model_data_config(args, model)
        embedder = EvaluatorEmbedder(load_or_train_classifier(data)[0].to(model.device))
        channels = model.codec.autoencoder.config.in_channels

    def image(path, flag):
        if path is None:
            return None
        if not Path(path).is_file():
            raise UserError(f"{flag} {path} does not exist; give an image file")
        files[flag.removeprefix("--guide-")] = str(path)
        return to_model_range(load_image(path, channels)).to(model.device)

    targets = SemanticTargets(text=text, text_scale=args.guide_text_scale,
                              content=image(content, "--guide-content"),
                              content_scale=args.guide_content_scale,
                              style=image(style, "--guide-style"),
                              style_scale=args.guide_style_scale, step=args.guide_step)
    return targets, embedder


def model_data_config(args: argparse.Namespace, model):
    """The data config the sampled checkpoint was trained with (its evaluator's data)."""
    from latentdiff.checkpoints.io import read_metadata
    from latentdiff.checkpoints.models import bundled_model
    from latentdiff.config import DataConfig, from_dict

    try:
        config = read_metadata(args.checkpoint or bundled_model()).get("config") or {}
    except (UserError, OSError, ValueError):
        config = {}
    if not config.get("data"):
        raise UserError("semantic guidance without --clip uses the evaluator network of the "
                        "model's training data, which this checkpoint does not name; give --clip")
    return from_dict(DataConfig, config["data"])


def add_train_classifier(commands_: argparse._SubParsersAction) -> None:
    p = commands_.add_parser("train-classifier", help="a noise-aware classifier for classifier "
                             "guidance", description=(
        "Train a noise-aware classifier p(y | z_t, σ) on noised latents of labelled data, for "
        "classifier guidance of MODEL (`latentdiff sample MODEL --classifier CKPT --class k`). "
        "MODEL: the latent-diffusion checkpoint to guide, or an autoencoder checkpoint. The run "
        "folder (train.out_dir, default runs/classifier) is like `train`'s; the held-out accuracy "
        "per noise level goes to metrics.jsonl and the checkpoint."))
    p.add_argument("model", type=Path, help="the latent-diffusion (or autoencoder) checkpoint")
    p.add_argument("config", help="YAML config path or bundled name (e.g. classifier-digits)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE",
                   help="e.g. entropy_weight=0.1 train.max_steps=2000")
    p.add_argument("--resume", action="store_true",
                   help="continue from train.out_dir/checkpoints/last.safetensors")
    p.add_argument("--dry-run", action="store_true", help="print the resolved config and exit")
    add_no_verify(p)
    p.set_defaults(func=train_classifier)


def train_classifier(args: argparse.Namespace) -> None:
    from latentdiff.config import ClassifierTrainConfig, load_config, to_yaml
    from latentdiff.train.classifier import train_classifier as run

    if not args.model.is_file():
        raise UserError(f"model {args.model} does not exist; give a checkpoint")
    cfg = load_config(ClassifierTrainConfig, args.config, [f"model={args.model}", *args.overrides])
    if args.dry_run:
        print(to_yaml(cfg), end="")
        return
    print(f"checkpoint: {run(cfg, resume=args.resume)}")

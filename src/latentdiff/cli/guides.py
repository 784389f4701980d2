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
    p.add_argument("--prior", type=Path, default=None,
                   help="an unconditional model of the same latent space mixed into every step "
                        "(super-resolution, inpainting)")
    p.add_argument("--prior-weight", type=non_negative, default=0.5,
                   help="the prior's weight w in [0, 1] (default: 0.5)")


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
    return Guides(classifier=classifier,
                  classifier_scale=getattr(args, "classifier_scale", 1.0),
                  entropy_aware=getattr(args, "entropy_aware", False),
                  autoguide=None if files["autoguide"] is None else load(args, files["autoguide"], dev),
                  prior=None if files["prior"] is None else load(args, files["prior"], dev),
                  prior_weight=args.prior_weight,
                  files={k: str(v) for k, v in files.items() if v is not None})


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

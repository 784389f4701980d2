"""The `latentdiff` parser: one-line errors, argument types that refuse bad numbers before any work,
and the option groups that the commands share."""

import argparse
import math
from importlib import metadata
from pathlib import Path

from latentdiff.images import MAX_PIXELS


class Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (`latentdiff: error: PROG: MESSAGE; see PROG --help`),
    exit code 2."""

    def error(self, message: str):
        self.exit(2,
                  f"latentdiff: error: {self.prog}: {' '.join(message.split())}; see "
                  f"`{self.prog} --help`\n")


def finite(text: str) -> float:
    """A float that is a number: nan and ±inf are refused."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def non_negative(text: str) -> float:
    value = finite(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text} is negative; give a number ≥ 0")
    return value


def _integer(text: str, low: int) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < low:
        raise argparse.ArgumentTypeError(f"{value} is below {low}; give a whole number ≥ {low}")
    return value


def seed(text: str) -> int:
    """A seed of torch's generators: 0 ≤ seed < 2⁶³ (sample i uses seed + i)."""
    value = _integer(text, 0)
    if value >= 2 ** 63 - 2 ** 32:
        raise argparse.ArgumentTypeError(f"{value} is too large; give a seed below 2^63 - 2^32")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1)


def non_negative_int(text: str) -> int:
    return _integer(text, 0)


def version() -> str:
    try:
        return metadata.version("latentdiff")
    except metadata.PackageNotFoundError:
        return "unknown (not installed)"


def add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto",
                   help="auto | cpu | cuda | cuda:N | mps (default: auto: cuda when "
                                                     "available, else cpu)")


def add_no_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-verify", action="store_true",
                   help="do not verify the content checksum of latentdiff checkpoints (about 1 s "
                        "per GB; for files you trust)")


def add_lpips(p: argparse.ArgumentParser, what: str = "") -> None:
    p.add_argument("--lpips-weights", default=None,
                   help=f"LPIPS weights file (adds the LPIPS column{what})")
    p.add_argument("--vgg16-weights", default=None,
                   help="torchvision VGG16 weights, if the LPIPS file lacks them")


def add_sampler(p: argparse.ArgumentParser) -> None:
    p.add_argument("--sampler", default=None,
                   help="sampler name (default: ddim; a consistency student: consistency); "
                        "`latentdiff samplers` lists them")
    p.add_argument("--steps", type=positive_int, default=None,
                   help="sampler steps (default: 50; a student: the steps it was distilled for)")
    p.add_argument("--spacing", default=None,
                   help="σ grid: uniform | leading | compvis | trailing | linspace | lcm | karras "
                        "| exponential (default: uniform; a consistency student: lcm)")
    p.add_argument("--final", default="zero", choices=("zero", "t0"),
                   help="where the grid ends: σ = 0 (default) or t0, the noise level of timestep "
                        "0, as CompVis's DDIM/PLMS and diffusers' set_alpha_to_one=false")
    p.add_argument("--eta", type=non_negative, default=None,
                   help="η of ddim / euler_ancestral / dpmpp_* (0: deterministic)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="any other sampler option, e.g. s_churn=40 (heun), variant=bh1 (unipc), "
                        "order=3; repeatable")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the UNet (pays off for many samples; runs eagerly, with a "
                        "note, where the compiler is missing)")


def add_model(p: argparse.ArgumentParser, dtype: bool = True) -> None:
    """How a checkpoint of any supported format is read (`checkpoints.load_model`)."""
    p.add_argument("--config", type=Path, default=None,
                   help="the original YAML of a CompVis latent-diffusion / Stable Diffusion "
                        "checkpoint (default: detected from the keys for the published "
                        "architectures)")
    p.add_argument("--tokenizer", type=Path, default=None,
                   help="local folder of the text encoder's tokenizer (default: the Hugging Face "
                        "cache, offline)")
    p.add_argument("--variant", default=None,
                   help="a diffusers folder's weight variant, e.g. fp16 (default: the plain "
                        "weights, or the only variant)")
    ema = p.add_mutually_exclusive_group()
    ema.add_argument("--no-ema", dest="use_ema", action="store_const", const=False, default=None,
                     help="use the raw weights (default: the EMA weights when the file has them, "
                          "except where an original YAML says use_ema: False)")
    ema.add_argument("--ema", dest="use_ema", action="store_const", const=True,
                     help="use the EMA weights even where the original YAML says use_ema: False")
    if dtype:
        p.add_argument("--dtype", default="fp32",
                       help="fp32 | fp16 | bf16: the UNet's and text encoder's precision; the "
                            "autoencoder stays fp32 (default: fp32)")
    add_no_verify(p)


def add_conditions(p: argparse.ArgumentParser, prompts: str = "single") -> None:
    """Class labels, prompts, negative prompt and guidance: what a generating command is conditioned
    on."""
    p.add_argument("--class", dest="class_label", type=non_negative_int, default=None,
                   help="class label for every sample (class-conditional models)")
    if prompts == "rows":
        p.add_argument("--prompt", action="append", default=None,
                       help="text prompt (text models; repeat for several rows; \"\" is the "
                            "unconditional sample)")
    else:
        p.add_argument("--prompt", default=None, help="the prompt (text-to-image models)")
    p.add_argument("--negative-prompt", default=None,
                   help="what guidance steers away from, instead of the empty prompt (text models)")
    p.add_argument("--guidance", type=non_negative, default=None,
                   help="classifier-free guidance scale s (default: 1, none; models trained with "
                        "condition dropout; a guided student: the scale it was distilled for)")
    p.add_argument("--guidance-rescale", type=non_negative, default=0.0,
                   help="guidance rescale φ in [0, 1] (default: 0)")
    p.add_argument("--guidance-interval", type=non_negative, nargs=2, default=None,
                   metavar=("SIGMA_LO", "SIGMA_HI"),
                   help="guide only for σ in [SIGMA_LO, SIGMA_HI] (Kynkäänniemi et al. 2024; "
                        "default: every step)")


def add_interleave(p: argparse.ArgumentParser) -> None:
    p.add_argument("--interleave", type=non_negative, default=None, metavar="ETA",
                   help="retrieval-augmented models: interleaved guidance (Re-Imagen), a share ETA "
                        "in [0, 1] of the steps guided against the empty prompt, the rest against "
                        "the hidden references (default: the empty prompt at every step)")


def add_max_pixels(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=positive_int, default=MAX_PIXELS,
                   help="refuse input images, --size and upscaled outputs of more pixels than "
                        f"this (default: {MAX_PIXELS}, 4096×4096): larger ones need memory that "
                        "few machines have")


def add_seed_and_out(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--seed", type=seed, default=0,
                   help="seed of the first sample; sample i uses seed + i")
    p.add_argument("--out", type=Path, default=Path(default_out),
                   help=f"output image grid: .png, .jpg or .webp (default: {default_out})")


DATA_HELP = ("the images to evaluate against: a bundled dataset (digits, photos, emoji, shapes), a "
             "folder of images, or MNIST IDX files / an .npz (default: the checkpoint's own "
             "training data)")

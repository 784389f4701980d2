"""A corpus of bad inputs to every command: each ends in exit code 2 and one line on stderr that
names the problem (no traceback), before any expensive work, and leaves no output file or folder
behind."""

import fcntl
import os
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import tiny_ldm_config
from latentdiff.checkpoints import read_metadata
from latentdiff.cli import build_parser, main
from latentdiff.config import to_yaml
from latentdiff.train.diffusion import train_latent_diffusion


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header declares width × height but that holds a few bytes of pixels: a
    decompression bomb."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    pixels = zlib.compress(b"\0" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def files(tmp_path_factory, trained_autoencoder) -> dict[str, Path]:
    """What the corpus points at: a tiny class-conditional LDM, its autoencoder, images, masks and
    broken files."""
    root = tmp_path_factory.mktemp("corpus")
    ldm = train_latent_diffusion(tiny_ldm_config(root / "ldm",
                                                 trained_autoencoder, "train.max_steps=1"))
    Image.fromarray(np.full((16, 16), 128, np.uint8)).save(root / "grey16.png")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(root / "black16.png")
    Image.fromarray(np.full((40, 40), 9, np.uint8)).save(root / "big40.png")
    (root / "bomb.png").write_bytes(png_header(30000, 30000))
    (root / "broken.yaml").write_text("train:\n  max_steps: [1\n")
    (root / "list.yaml").write_text("- 1\n- 2\n")
    (root / "text.ckpt").write_text("not a checkpoint")
    (root / "a-file").write_text("not a folder")
    truncated = root / "truncated.safetensors"
    truncated.write_bytes(ldm.read_bytes()[:5000])
    return {"ldm": ldm, "ae": trained_autoencoder, "root": root, "truncated": truncated}


def sample(f, *extra: str) -> list[str]:
    return ["sample", str(f["ldm"]), "--class", "1", "--n", "1", "--steps", "1", *extra]


def task(f, name: str, *extra: str) -> list[str]:
    return [name, str(f["ldm"]), "--n", "1", "--steps", "1", "--class", "1", *extra]


# (id, argv from the files, words the message must hold, outputs that must not exist afterwards
# (relative to tmp_path))
CORPUS = [
    ("yaml-syntax",
     lambda f, o: ["train", str(f["root"] / "broken.yaml"), f"train.out_dir={o / 'run'}"],
     "line 3, column 1", ["run"]),
    ("config-unknown-key",
     lambda f, o: ["train", "ldm-digits", "train.max_stepz=3", f"train.out_dir={o / 'run'}"],
     "unknown config key", ["run"]),
    ("checkpoint-every-negative", lambda f, o: ["train", "ldm-digits", f"autoencoder={f['ae']}",
                                                "train.checkpoint_every=-1",
                                                f"train.out_dir={o / 'run'}"],
     "train.checkpoint_every=-1 must be ≥ 0", ["run"]),
    ("lr-nan", lambda f, o: ["train", "ldm-digits", f"autoencoder={f['ae']}", "train.lr=nan",
                             f"train.out_dir={o / 'run'}"], "finite", ["run"]),
    ("ema-decay-inf",
     lambda f, o: ["train", "ldm-digits", f"autoencoder={f['ae']}", "ema_decay=inf",
                   f"train.out_dir={o / 'run'}"], "finite", ["run"]),
    ("out-dir-under-a-file", lambda f, o: ["train", "ldm-digits", f"autoencoder={f['ae']}",
                                           f"train.out_dir={f['root'] / 'a-file' / 'run'}"],
     "which is a file", []),
    ("out-dir-unwritable",
     lambda f, o: ["train", "ldm-digits", f"autoencoder={f['ae']}", "train.out_dir=/proc/run"],
     "not writable", []),
    ("incompatible-stages", lambda f, o: ["train", "ldm-digits", f"autoencoder={f['ae']}",
                                          f"train.out_dir={o / 'run'}"],
     "unet.in_channels=2", ["run"]),
    ("autoencoder-is-a-folder", lambda f, o: ["train", "ldm-digits", f"autoencoder={f['root']}",
                                              f"train.out_dir={o / 'run'}"],
     "is a folder", ["run"]),
    ("yaml-not-a-mapping",
     lambda f, o: ["train", str(f["root"] / "list.yaml"), f"train.out_dir={o / 'run'}"],
     "must be a mapping", ["run"]),
    ("seed-too-large",
     lambda f, o: sample(f, "--seed", str(2 ** 70), "--out", str(o / "s.png")), "too large",
     ["s.png"]),
    ("size-over-the-limit", lambda f, o: sample(f, "--size", "100000", "--out", str(o / "s.png")),
     "raise --max-pixels", ["s.png"]),
    ("ddim-eta-above-one",
     lambda f, o: sample(f, "--eta", "2", "--out", str(o / "s.png")), "[0, 1]", ["s.png"]),
    ("sampler-option-type",
     lambda f, o: sample(f, "--sampler", "heun", "--option", "s_churn=abc", "--out",
                         str(o / "s.png")), "must be a float", ["s.png"]),
    ("not-a-checkpoint-file",
     lambda f, o: ["convert", str(f["root"] / "text.ckpt"), str(o / "y.safetensors")],
     "neither a safetensors file nor a PyTorch checkpoint", ["y.safetensors"]),
    ("guidance-nan", lambda f, o: sample(f, "--guidance", "nan", "--out", str(o / "s.png")),
     "not a finite", ["s.png"]),
    ("guidance-inf", lambda f, o: sample(f, "--guidance", "inf", "--out", str(o / "s.png")),
     "not a finite", ["s.png"]),
    ("guidance-rescale-nan",
     lambda f, o: sample(f, "--guidance-rescale", "nan", "--out", str(o / "s.png")),
     "not a finite", ["s.png"]),
    ("eta-inf", lambda f, o: sample(f, "--eta", "inf", "--out", str(o / "s.png")),
     "not a finite", ["s.png"]),
    ("sampler-option-nan", lambda f, o: sample(f, "--option", "eta=nan", "--out", str(o / "s.png")),
     "finite number", ["s.png"]),
    ("sampler-option-inf",
     lambda f, o: sample(f, "--option", "eta=.inf", "--out", str(o / "s.png")),
     "finite number", ["s.png"]),
    ("n-zero", lambda f, o: sample(f, "--n", "0", "--out", str(o / "s.png")), "≥ 1", ["s.png"]),
    ("steps-not-a-number",
     lambda f, o: sample(f, "--steps", "ten", "--out", str(o / "s.png")), "not a whole number",
     ["s.png"]),
    ("out-without-extension", lambda f, o: sample(f, "--out", str(o / "grid")),
     "no extension", ["grid"]),
    ("out-unknown-extension", lambda f, o: sample(f, "--out", str(o / "grid.gif")),
     "extension '.gif'", ["grid.gif"]),
    ("out-is-a-folder", lambda f, o: sample(f, "--out", str(f["root"])), "is a folder", []),
    ("out-under-a-file", lambda f, o: sample(f, "--out", str(f["root"] / "a-file" / "s.png")),
     "which is a file", []),
    ("out-unwritable", lambda f, o: sample(f, "--out", "/proc/s.png"), "not writable", []),
    # the output is checked before the model is read: a missing checkpoint is not what is reported
    ("out-checked-first",
     lambda f, o: ["sample", str(o / "missing.safetensors"), "--out", str(o / "x")],
     "no extension", ["x"]),
    ("device-tpu", lambda f, o: sample(f, "--device", "tpu", "--out", str(o / "s.png")),
     "--device", ["s.png"]),
    ("checkpoint-is-a-folder",
     lambda f, o: ["sample", str(f["root"]), "--out", str(o / "s.png")], "folder",
     ["s.png"]),
    ("checkpoint-truncated",
     lambda f, o: ["sample", str(f["truncated"]), "--out", str(o / "s.png")],
     "truncated", ["s.png"]),
    ("class-out-of-range",
     lambda f, o: ["sample", str(f["ldm"]), "--class", "12", "--steps", "1", "--out",
                   str(o / "s.png")], "class labels in 0..9", ["s.png"]),
    ("negative-prompt-without-prompt",
     lambda f, o: sample(f, "--negative-prompt", "x", "--out", str(o / "s.png")),
     "needs --prompt", ["s.png"]),
    ("guide-image-missing",
     lambda f, o: sample(f, "--guide-image", str(o / "none.png"), "--out", str(o / "s.png")),
     "does not exist", ["s.png"]),
    ("image-bomb-header",
     lambda f, o: task(f, "img2img", "--image", str(f["root"] / "bomb.png"), "--out",
                       str(o / "i.png")), "30000×30000", ["i.png"]),
    ("image-over-the-limit",
     lambda f, o: task(f, "img2img", "--image", str(f["root"] / "big40.png"), "--max-pixels",
                       "1000", "--out", str(o / "i.png")), "raise --max-pixels", ["i.png"]),
    ("image-is-a-folder",
     lambda f, o: task(f, "img2img", "--image", str(f["root"]), "--out", str(o / "i.png")),
     "is a folder", ["i.png"]),
    ("img2img-class-model-without-class", lambda f, o: ["img2img", str(f["ldm"]), "--image",
                                                        str(f["root"] / "grey16.png"),
                                                        "--steps", "1", "--out",
                                                        str(o / "i.png")], "--class", ["i.png"]),
    ("strength-out-of-range",
     lambda f, o: task(f, "img2img", "--image", str(f["root"] / "grey16.png"), "--strength",
                       "1.5", "--out", str(o / "i.png")), "strength", ["i.png"]),
    ("inpaint-mask-missing",
     lambda f, o: task(f, "inpaint", "--image", str(f["root"] / "grey16.png"), "--mask",
                       str(o / "none.png"), "--out", str(o / "i.png")), "does not exist",
     ["i.png"]),
    ("upscale-wrong-model",
     lambda f, o: ["upscale", str(f["ldm"]), "--image", str(f["root"] / "grey16.png"),
                   "--out", str(o / "u.png")], "conditioned on", ["u.png"]),
    ("eval-autoencoder-image-size",
     lambda f, o: ["eval-autoencoder", str(f["ae"]), "--image-size", "15"],
     "multiple of", []),
    ("eval-autoencoder-samples-unwritable",
     lambda f, o: ["eval-autoencoder", str(f["ae"]), "--samples", "/proc/r.png"],
     "not writable", []),
    ("eval-autoencoder-unknown-data",
     lambda f, o: ["eval-autoencoder", str(f["ae"]), "--data", "nosuchdata"],
     "no such dataset", []),
    ("eval-json-extension",
     lambda f, o: ["eval", str(f["ldm"]), "--json", str(o / "r.txt")], ".json", ["r.txt"]),
    ("eval-seeds-zero", lambda f, o: ["eval", str(f["ldm"]), "--seeds", "0"], "≥ 1", []),
    ("export-onto-itself", lambda f, o: ["export", str(f["ldm"]), str(f["ldm"])],
     "input file itself", []),
    ("export-onto-itself-by-another-path", lambda f, o: ["export", str(f["ldm"]),
                                                         str(f["ldm"].parent / ".." / "checkpoints" / f["ldm"].name)],
     "input file itself", []),
    ("export-over-a-training-checkpoint", lambda f, o: ["export", str(f["ldm"]), str(f["ae"])],
     "training checkpoint", []),
    ("export-no-extension",
     lambda f, o: ["export", str(f["ldm"]), str(o / "exported")], "no extension",
     ["exported"]),
    ("convert-onto-itself", lambda f, o: ["convert", str(f["ldm"]), str(f["ldm"])],
     "input file itself", []),
    ("convert-unknown-extension",
     lambda f, o: ["convert", str(f["ldm"]), str(o / "x.ckpt")], ".safetensors",
     ["x.ckpt"]),
    ("convert-existing-folder",
     lambda f, o: ["convert", str(f["ldm"]), str(f["root"])], "already exists", []),
    ("config-for-a-latentdiff-checkpoint",
     lambda f, o: sample(f, "--config", str(f["root"] / "list.yaml"),
                         "--out", str(o / "g.png")),
     "carries its own configuration", ["g.png"]),
    ("variant-for-a-file", lambda f, o: sample(f, "--variant", "fp16", "--out", str(o / "g.png")),
     "only diffusers folders", ["g.png"]),
    ("demo-out-is-a-file",
     lambda f, o: ["demo", "--out", str(f["root"] / "a-file")], "is a file", []),
    ("unknown-command", lambda f, o: ["smaple"], "invalid choice", []),
]


@pytest.mark.parametrize("case", CORPUS, ids=[c[0] for c in CORPUS])
def test_bad_input_is_one_line_exit_2_and_leaves_nothing(case, files, tmp_path, capsys):
    _, argv, words, outputs = case
    before = sorted(p.name for p in files["root"].rglob("*"))
    assert main(argv(files, tmp_path)) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.startswith("latentdiff: error:") and "\n" not in err and "Traceback" not in err, err
    assert words in err, err
    for name in outputs:
        assert not (tmp_path / name).exists(), name
    # nothing written beside the inputs
    assert sorted(p.name for p in files["root"].rglob("*")) == before
    assert not [p for p in tmp_path.rglob("*") if "latentdiff" in p.name], list(tmp_path.rglob("*"))


def test_the_corpus_is_large_and_covers_every_command():
    commands = {argv({"ldm": Path("l"), "ae": Path("a"), "root": Path("r"), "truncated": Path("t")}, Path("o"))[0]
                for _, argv, _, _ in CORPUS}
    assert len(CORPUS) >= 45
    assert commands >= {"train", "sample", "img2img", "inpaint", "upscale", "eval",
                        "eval-autoencoder", "export",
                        "convert", "demo"}


def test_a_run_in_use_is_refused(files, tmp_path, capsys):
    """Two processes never train into the same run folder (the second gets a one-line error)."""
    out = tmp_path / "run"
    out.mkdir()
    with open(out / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write("4242\n")
        lock.flush()
        argv = ["train", "ldm-digits", f"autoencoder={files['ae']}",
                f"train.out_dir={out}", "--resume"]
        assert main(argv) == 2
    assert "in use by another latentdiff process (pid 4242)" in capsys.readouterr().err


def test_a_corrupted_checkpoint_is_named_and_no_verify_skips_the_check(files, tmp_path, capsys):
    """Exponent bits flipped inside tensors (a black image and exit 0 before checksums) are found on
    loading."""
    damaged = tmp_path / "damaged.safetensors"
    data = bytearray(files["ldm"].read_bytes())
    header = 8 + struct.unpack("<Q", bytes(data[:8]))[0]
    # the high byte of float32 values: exponent bits
    for offset in range(header + 3, len(data), 4096):
        data[offset] ^= 0x40
    damaged.write_bytes(bytes(data))
    out = tmp_path / "s.png"
    assert main(["sample", str(damaged), "--class", "1", "--n", "1", "--steps", "1", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "damaged.safetensors is corrupted" in err and "--no-verify" in err and not out.exists()
    # skipping the check, the flipped exponents reach the sampler, whose guard still refuses a
    # silent black image
    assert main(["sample", str(damaged), "--class", "1", "--n", "1", "--steps",
                 "1", "--out", str(out),
                 "--no-verify"]) == 2
    assert "non-finite values" in capsys.readouterr().err and not out.exists()


def test_help_describes_every_command_and_argument(capsys):
    parser = build_parser()
    commands = next(a for a in parser._actions if a.dest == "command")
    for name, sub in commands.choices.items():
        assert sub.description and len(sub.description) > 40, name
        for action in sub._actions:
            if not action.option_strings:
                assert action.help, f"{name} {action.dest}"
    assert main(["--version"]) == 0 and capsys.readouterr().out.startswith("latentdiff ")
    assert main(["sample", "--help"]) == 0
    assert "Stable Diffusion" in capsys.readouterr().out


def test_class_conditional_tasks_and_exact_sample_counts(files, tmp_path, capsys, caplog):
    """img2img / inpaint take --class for class-conditional models; sample --n gives exactly n
    images."""
    grey, black = str(files["root"] / "grey16.png"), str(files["root"] / "black16.png")
    out = tmp_path / "o.png"
    assert main(task(files, "img2img", "--image", grey, "--out", str(out))) == 0
    assert main(task(files, "inpaint", "--image", grey, "--mask", black, "--out", str(out))) == 0
    assert "mask is all black" in caplog.text
    for n, size in ((7, (1 * 18 + 2, 7 * 18 + 2)), (20, (2 * 18 + 2, 10 * 18 + 2))):
        assert main(["sample", str(files["ldm"]), "--n", str(n), "--steps", "1", "--out", str(out)]) == 0
        assert f"({n} images)" in capsys.readouterr().out
        assert Image.open(out).size == size  # one row per class as far as n goes
    assert read_metadata(files["ldm"])["train_state"]["step"] == 1


def test_progress_is_a_line_at_a_time_in_logs(files, tmp_path):
    """With stderr in a file (nohup, CI), a short run prints its bar a few times, not once per
    step."""
    out = tmp_path / "run"
    config = tiny_ldm_config(out, files["ae"], "train.max_steps=40", "train.checkpoint_every=40")
    (tmp_path / "c.yaml").write_text(to_yaml(config))
    with open(tmp_path / "log.txt", "w") as log:
        done = subprocess.run([sys.executable, "-m", "latentdiff", "train", str(tmp_path / "c.yaml")], stderr=log,
                              stdout=subprocess.DEVNULL,
                              env={**os.environ, "OMP_NUM_THREADS": "1"}, check=False)
    assert done.returncode == 0
    lines = [line for line in (tmp_path / "log.txt").read_text().splitlines()
             if line.startswith("diffusion:")]
    assert 1 <= len(lines) <= 4 and "\r" not in (tmp_path / "log.txt").read_text(), lines

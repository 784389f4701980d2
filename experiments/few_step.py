"""Few-step generation: a teacher's alignment and FD against network evaluations (NFE) for several
samplers, beside its distilled students at 1, 2, 4 and 8 steps, with sampling time per image and
the distillation cost.

For each configuration, one sample per held-out condition (the first n) and sampling seed of the
teacher's dataset, scored by `evaluation/alignment.py` (emoji: the classifier evaluator's accuracy
on the prompt's subgroup; FD in its features against the training split; real and shuffled
baselines). A guided teacher (s ≠ 1) costs 2 NFE per step (conditional and unconditional in one
batched pass of twice the rows), so its steps are NFE/2; a student that embeds s costs 1 NFE per
step. Each student samples with its own sampler and s: a consistency student at every
--student-steps, a DDIM student (progressive or guided; give one --student per stage checkpoint,
under the same name) at the steps it was trained for; when a student is unguided (s = 1), the
teacher's DDIM-50 at s = 1 is scored too. Scores are cached per model (path and content checksum), sampler,
steps, n, seeds and s (--cache). Time per image: `generate` on 64 held-out prompts, best of 2 rounds over all
configurations (interleaved, warm; decoding included), measured afresh in every run. Distillation
cost: each student's run log (metrics.jsonl, the time of the last step of each session). --curve:
every kept checkpoint of a run scored at --curve-steps, quality against distillation steps. Usage:

    python experiments/few_step.py --student lcd=runs/distill/checkpoints/last.safetensors \\
        [--student guided=runs/guided/checkpoints/step-0001600.safetensors ...] \\
        [--teacher CKPT] [--n 400] [--seeds 2] [--guidance 3] [--samplers ddim dpmpp_2m unipc] \\
        [--nfe 4 8 16 32 50 100] [--student-steps 1 2 4 8] [--teacher-minutes 76.1] \\
        [--curve lcd=runs/distill [--curve-steps 4]]
"""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from latentdiff.checkpoints import load_latent_diffusion
from latentdiff.checkpoints.models import bundled_model
from latentdiff.files import write_text
from latentdiff.data import load_dataset, split_holdout
from latentdiff.evaluation.alignment import AlignmentReport, evaluate_alignment
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.parameters import file_sha256
from latentdiff.pipelines import generate
from latentdiff.samplers import SAMPLERS
# experiments/report.py (the script's folder)
from report import Provenance, shown_path, write_report

TITLE = "Few-step students against the teacher's samplers"


def seconds_per_image(model, prompts: list[str], warm: bool, **options) -> float:
    """One timed `generate` call on the prompts (after a 4-image warm-up call when `warm`), per
    image."""
    seeds = list(range(len(prompts)))
    if warm:
        generate(model, seeds[:4], prompts=prompts[:4], **options)
    start = time.perf_counter()
    generate(model, seeds, prompts=prompts, **options)
    return (time.perf_counter() - start) / len(prompts)


def cached(folder: Path, key: str, compute) -> dict:
    """compute() once per key: scores are kept in folder/scores.json between runs (times are
    not)."""
    path = folder / "scores.json"
    store = json.loads(path.read_text()) if path.is_file() else {}
    if key not in store:
        store[key] = compute()
        write_text(path, json.dumps(store, indent=1))
    return store[key]


def run_minutes(run: Path, until: int | None = None) -> float | None:
    """The training-loop minutes of a run folder, a student's or a teacher's (its metrics.jsonl), over
    all of its sessions: time_s restarts at 0 when a run is resumed, so each session's last time is added.
    `until`: only the log lines up to that step (a kept step-N checkpoint's cost)."""
    log = Path(run) / "metrics.jsonl"
    if not log.is_file():
        return None
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    times = [r["time_s"] for r in lines if until is None or r["step"] <= until]
    total = sum(t for t, after in zip(times, times[1:]) if after < t) + (times[-1] if times else 0)
    return round(total / 60, 2) if times else None


def checkpoint_minutes(path: Path) -> float | None:
    """Distillation minutes to a student checkpoint: to step N for a kept step-N checkpoint, else
    the whole run of its folder; `path` may be a run folder (the whole run)."""
    if path.is_dir():
        return run_minutes(path)
    step = int(path.stem.removeprefix("step-")) if path.stem.startswith("step-") else None
    return run_minutes(path.parent.parent, step)


def content_hash(path: Path) -> str:
    """A checkpoint's content checksum (read once per file version): in the cache keys, so that a
    file replaced under the same name is scored afresh."""
    return file_sha256(path)[:16]


def row_of(report, name: str, sampler: str, steps: int, nfe: int, scale: float) -> dict:
    r = report.rows[0]
    return {"model": name, "sampler": sampler, "steps": steps, "nfe": nfe, "guidance": scale,
            "alignment": r.alignment, "fd": r.fd}


def reference_row(results: dict) -> dict | None:
    """The teacher's DDIM, 50 steps at the report's guidance scale: the targets' reference."""
    return next((r for r in results["rows"] if r["model"] == "teacher" and r["sampler"] == "ddim"
                 and r["guidance"] == results["guidance"] and r["steps"] == 50), None)


def render(results: dict) -> list[str]:
    b, s = results["baselines"], results["guidance"]
    lines = [(f"Teacher: `{results['teacher']}` ({results['teacher_minutes']} min of training), "
              f"guidance s = {s}; students (minutes of distillation to the checkpoint): "
              + "; ".join(f"`{k}` = " + ", ".join(f"`{c['checkpoint']}` ({c['minutes']} min)"
                                                  for c in v)
                          for k, v in results["students"].items()) + "."), "",
             (f"{b['metric']}; n = {b['n']} held-out conditions per seed, {results['seeds']} "
              f"seeds (mean ± sd over seeds). Real images {b['real']:.3f}, shuffled real images "
              f"(chance) {b['shuffled']:.3f}; FD real-vs-real {b['fd_baseline']:.2f}."), "",
             "| model | sampler | s | steps | NFE | alignment | FD | ms per image |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results["rows"]:
        lines.append(f"| {r['model']} | {r['sampler']} | {r['guidance']:g} | {r['steps']} | "
                     f"{r['nfe']} | {np.mean(r['alignment']):.3f} ± {np.std(r['alignment']):.3f} | "
                     f"{np.mean(r['fd']):.2f} ± {np.std(r['fd']):.2f} | "
                     f"{1000 * r['seconds_per_image']:.1f} |")
    reference = reference_row(results)
    if reference is not None:
        a0, f0, t0 = (np.mean(reference["alignment"]), np.mean(reference["fd"]),
                      reference["seconds_per_image"])
        lines += ["", (f"Against the teacher's reference (DDIM, 50 guided steps, 100 NFE: alignment "
                       f"{a0:.3f}, FD {f0:.2f}):"), "",
                  "| student | s | steps | alignment / teacher's | FD / teacher's | speed-up |",
                  "|---|---|---|---|---|---|"]
        for r in results["rows"]:
            if r["model"] != "teacher":
                lines.append(f"| {r['model']} | {r['guidance']:g} | {r['steps']} | "
                             f"{np.mean(r['alignment']) / a0:.3f} | {np.mean(r['fd']) / f0:.2f} | "
                             f"{t0 / r['seconds_per_image']:.1f}× |")
    if results.get("curves"):
        lines += ["", "Quality against distillation steps (every kept checkpoint of a run):", "",
                  "| run | distillation steps | sampling steps | alignment | FD |", "|---|---|---|---|---|"]
        lines += [f"| {r['model']} | {r['distillation_steps']} | {r['steps']} | "
                  f"{np.mean(r['alignment']):.3f} ± {np.std(r['alignment']):.3f} | "
                  f"{np.mean(r['fd']):.2f} ± {np.std(r['fd']):.2f} |" for r in results["curves"]]
    return lines


def plot(plt, results: dict):
    """Alignment and FD against NFE: a line per teacher sampler, a line per student."""
    curves = results.get("curves") or []
    figure, axes = plt.subplots(1, 3 if curves else 2, figsize=(16.5 if curves else 11, 4.2))
    groups = {}
    for r in results["rows"]:
        label = (r["model"] if r["model"] != "teacher"
                 else f"teacher, {r['sampler']}, s = {r['guidance']:g}")
        groups.setdefault(label, []).append(r)
    for label, rows in groups.items():
        nfe = [r["nfe"] for r in rows]
        style = "o--" if label.startswith("teacher") else "s-"
        for axis, key in zip(axes, ("alignment", "fd")):
            axis.errorbar(nfe, [np.mean(r[key]) for r in rows], [np.std(r[key]) for r in rows],
                          fmt=style, label=label, capsize=2)
    b = results["baselines"]
    axes[0].axhline(b["real"], color="black", linestyle=":", label="real held-out images")
    axes[1].axhline(b["fd_baseline"], color="black", linestyle=":", label="real-vs-real")
    for axis, name in zip(axes, ("alignment (classifier accuracy)", "FD (classifier features)")):
        axis.set_xscale("log")
        axis.set_xlabel("network evaluations per image (NFE)")
        axis.set_ylabel(name)
    axes[1].set_yscale("log")
    axes[0].legend(fontsize=7)
    for name in dict.fromkeys(r["model"] for r in curves):
        run = [r for r in curves if r["model"] == name]
        axes[2].errorbar([r["distillation_steps"] for r in run], [np.mean(r["fd"]) for r in run],
                         [np.std(r["fd"]) for r in run], fmt="s-", capsize=2,
                         label=f"{name}, {run[0]['steps']} sampling steps")
    if curves and reference_row(results) is not None:
        axes[2].axhline(1.25 * np.mean(reference_row(results)["fd"]), color="black", linestyle=":",
                        label="1.25 × the teacher's DDIM-50 FD")
    if curves:
        axes[2].set_xlabel("distillation steps")
        axes[2].set_ylabel("FD (classifier features)")
        axes[2].legend(fontsize=7)
    return figure


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", type=Path, default=None, help="default: the bundled emoji model")
    p.add_argument("--student", action="append", default=[], metavar="NAME=CHECKPOINT")
    p.add_argument("--run", action="append", default=[], metavar="NAME=RUN_OR_CHECKPOINT",
                   help="where an exported student came from: its run folder, or the kept "
                        "step-N checkpoint it was exported from (its cost: the run to step N)")
    p.add_argument("--curve", action="append", default=[], metavar="NAME=RUN_FOLDER",
                   help="score every kept checkpoint of a distillation run (train.keep_checkpoints)"
                        " at --curve-steps: quality against distillation steps")
    p.add_argument("--curve-steps", type=int, default=4)
    p.add_argument("--n", type=int, default=400)
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--guidance", type=float, default=3.0)
    p.add_argument("--samplers", nargs="+", default=["ddim", "dpmpp_2m", "unipc"])
    p.add_argument("--nfe", type=int, nargs="+", default=[4, 8, 16, 32, 50, 100])
    p.add_argument("--student-steps", type=int, nargs="+", default=[1, 2, 4, 8])
    p.add_argument("--teacher-minutes", type=float, default=76.1,
                   help="the teacher's training time (docs/conditioning.md: the bundled model)")
    p.add_argument("--name", default="few-step", help="report folder under reports/")
    p.add_argument("--cache", type=Path, default=Path("runs/few-step-cache"),
                   help="scores kept between runs (times are always measured afresh)")
    args = p.parse_args()
    provenance = Provenance()
    checkpoint = args.teacher or bundled_model()
    teacher = load_latent_diffusion(checkpoint)
    data_cfg = stored_data_config(checkpoint)
    students = []  # (name, checkpoint, model); a progressive run's stages share its name
    for item in args.student:
        name, _, path = item.partition("=")
        students.append((name, Path(path), load_latent_diffusion(path)))
    runs = {k: Path(v) for k, _, v in (item.partition("=") for item in args.run)}
    seeds, s = range(args.seeds), args.guidance
    # (name, checkpoint, model, sampler, steps, NFE, s): a student samples with its own sampler and
    # s (1 NFE per step); a DDIM student (progressive, guided) only at the steps it was trained for
    configs = [("teacher", checkpoint, teacher, sampler, nfe // 2 if s != 1 else nfe, nfe, s)
               for sampler in args.samplers for nfe in args.nfe]
    for name, path, model in students:
        own = model.sampling_defaults
        steps = args.student_steps if own["sampler"] == "consistency" else [own["steps"]]
        configs += [(name, path, model, own["sampler"], k, k, own["guidance_scale"]) for k in steps]
    if s != 1 and any(c[6] == 1 for c in configs):  # unguided students: the unguided teacher too
        configs.append(("teacher", checkpoint, teacher, "ddim", 50, 50, 1.0))
    rows, baselines = [], None

    def scored(path: Path, model, sampler: str, steps: int, scale: float) -> AlignmentReport:
        key = (f"{shown_path(path)}|{content_hash(path)}|{sampler}|{steps}|n{args.n}|seeds{args.seeds}|"
               f"s{scale:g}")
        return AlignmentReport.from_dict(cached(args.cache, key, lambda: evaluate_alignment(
            model, data_cfg, [scale], seeds=seeds, n=args.n, sampler=sampler, steps=steps).to_dict()))

    for name, path, model, sampler, steps, nfe, scale in configs:
        report = scored(path, model, sampler, steps, scale)
        rows.append(row_of(report, name, sampler, steps, nfe, scale))
        print(f"{name} {sampler} {steps} steps ({nfe} NFE, s = {scale:g}): alignment "
              f"{np.mean(rows[-1]['alignment']):.3f}, FD {np.mean(rows[-1]['fd']):.2f}", flush=True)
        baselines = {"metric": report.metric, "n": report.n, "real": report.real,
                     "shuffled": report.shuffled, "fd_baseline": report.fd_baseline}
    curves = []
    for name, _, folder in (item.partition("=") for item in args.curve):
        for path in sorted(Path(folder, "checkpoints").glob("step-*.safetensors")):
            model = load_latent_diffusion(path)
            own = model.sampling_defaults
            row = row_of(scored(path, model, own["sampler"], args.curve_steps, own["guidance_scale"]),
                         name, own["sampler"], args.curve_steps, args.curve_steps,
                         own["guidance_scale"])
            curves.append({**row, "checkpoint": shown_path(path),
                           "distillation_steps": int(path.stem.removeprefix("step-"))})
            print(f"{name} after {curves[-1]['distillation_steps']} steps: FD "
                  f"{np.mean(row['fd']):.2f}", flush=True)
    # times are never cached: measured here for every configuration, interleaved, warm
    held = split_holdout(load_dataset(data_cfg), data_cfg.holdout, data_cfg.split_seed)[1]
    prompts = list(held.captions[:64])
    for repeat in range(2):
        for row, (_, _, model, sampler, steps, _, scale) in zip(rows, configs):
            seconds = seconds_per_image(model, prompts, warm=repeat == 0, guidance_scale=scale,
                                        sampler=sampler, steps=steps)
            row["seconds_per_image"] = min(row.get("seconds_per_image", seconds), seconds)
    listed = {}
    for name, path, _ in students:
        listed.setdefault(name, []).append({"checkpoint": shown_path(path),
                                            "minutes": checkpoint_minutes(runs.get(name, path))})
    results = {"teacher": shown_path(checkpoint), "teacher_minutes": args.teacher_minutes,
               "guidance": s, "seeds": args.seeds,
               "samplers_nfe_per_step": {k: SAMPLERS[k].nfe_per_step for k in args.samplers},
               "students": listed,
               "baselines": baselines, "rows": rows, "curves": curves}
    print(write_report(args.name, TITLE, results, render, provenance, plot))


if __name__ == "__main__":
    torch.set_grad_enabled(False)
    main()

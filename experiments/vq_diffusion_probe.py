"""Why VQ-Diffusion learns slowly at this budget: a 2 × 2 factorial of the auxiliary weight λ (the paper's
5e-4, or 1) and the sampling of t (uniform, or importance-sampled from the loss history with the adaptive
auxiliary weight λ·(2 − t/T), as in the authors' training code), each `vq-diffusion-shapes` trained
--steps steps on the same VQ-f4 autoencoder with checkpoints every --every steps.

Every checkpoint (EMA weights) is probed on --n held-out images (a seeded subset) with their captions:
- the held-out bound: the per-token variational bound at t ~ U{1..T} (one draw per image, fixed seed);
- the argmax accuracy of p_θ(x̃_0 | x_t) at t = 5, 20, 50, 80, over all tokens and over masked tokens
  (copying the visible tokens alone gives about 1 − γ̄_t at small t).

    python experiments/vq_diffusion_probe.py --autoencoder runs/vq-diffusion-shapes/autoencoder/...
"""

import argparse
from pathlib import Path

import torch

from latentdiff.checkpoints.vq_diffusion import load_vq_diffusion
from latentdiff.config import load_config
from latentdiff.config_systems import VQDiffusionTrainConfig
from latentdiff.data import load_dataset, split_holdout, to_model_range
from latentdiff.discrete_noise import draw
from latentdiff.discrete_objective import vq_diffusion_terms
from latentdiff.evaluation.autoencoder import stored_data_config
from latentdiff.train.vq_diffusion import train_vq_diffusion
# experiments/ (the script's folder)
from guidance_family import trained
from report import Provenance, shown_path, write_report

TITLE = "VQ-Diffusion's learning speed: auxiliary weight × t sampling (shapes, text)"
ARMS = {  # name → overrides
    "λ 5e-4, uniform t": ["aux_weight=5e-4", "importance_sampling=false", "adaptive_aux_weight=false"],
    "λ 5e-4, importance t": ["aux_weight=5e-4", "importance_sampling=true", "adaptive_aux_weight=true"],
    "λ 1, uniform t": ["aux_weight=1.0", "importance_sampling=false", "adaptive_aux_weight=false"],
    "λ 1, importance t": ["aux_weight=1.0", "importance_sampling=true", "adaptive_aux_weight=true"],
}
PROBE_T = (5, 20, 50, 80)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--autoencoder", type=Path, required=True, help="an ae-vq-f4-shapes checkpoint")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--every", type=int, default=100)
    p.add_argument("--n", type=int, default=128, help="held-out images probed")
    p.add_argument("--arms", nargs="+", type=int, default=list(range(len(ARMS))),
                   help="which arms (0 … 3) this process trains and probes")
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--root", type=Path, default=Path("runs/vq-diffusion-probe"))
    p.add_argument("--report", default="vq-diffusion-probe")
    args = p.parse_args()
    provenance = Provenance()
    arms = []
    for i, (name, overrides) in enumerate(ARMS.items()):
        if i not in args.arms:
            continue
        cfg = load_config(VQDiffusionTrainConfig, "vq-diffusion-shapes", [
            f"autoencoder={args.autoencoder}", *overrides, f"train.max_steps={args.steps}",
            f"train.checkpoint_every={args.every}", "train.keep_checkpoints=true",
            "train.sample_every=0", f"train.out_dir={args.root}/arm{i}"])
        last = trained(cfg, train_vq_diffusion)
        if args.train_only:
            continue
        points = [{"step": step, **probe(last.parent / f"step-{step:07d}.safetensors", args.n)}
                  for step in range(args.every, args.steps + 1, args.every)]
        print(name, points[-1], flush=True)
        arms.append({"arm": name, "run": shown_path(last), "points": points})
    if args.train_only:
        return
    results = {"steps": args.steps, "n": args.n, "autoencoder": shown_path(args.autoencoder),
               "arms": arms}
    print(write_report(args.report, TITLE, results, render, provenance))


@torch.no_grad()
def probe(checkpoint: Path, n: int) -> dict:
    """The held-out bound and x̃_0 accuracies of one checkpoint (module docstring)."""
    model = load_vq_diffusion(checkpoint)
    cfg = stored_data_config(checkpoint)
    _, held = split_holdout(load_dataset(cfg), cfg.holdout, cfg.split_seed)
    held = held.sample(n)
    ae, schedule, (h, w) = model.autoencoder, model.schedule, model.code_grid
    posterior = ae.encode(to_model_range(held.images))
    x0 = ae.quantize(getattr(posterior, "mean", posterior)).indices.flatten(1)
    cond = model.conditioner.condition(list(held.captions), "cpu").network_kwargs()
    generator = torch.Generator().manual_seed(123)

    def logits(x_t, t):
        return model.transformer(x_t.view(-1, h, w), t, **cond).flatten(2)

    out = {}
    for t in PROBE_T:
        x_t = schedule.q_sample(x0, t, generator)
        right = logits(x_t, torch.full((n,), t)).argmax(1) == x0
        out[f"accuracy_t{t}"] = round(right.double().mean().item(), 4)
        out[f"masked_accuracy_t{t}"] = round(right[x_t == schedule.K].double().mean().item(), 4)
    t = torch.randint(1, schedule.T + 1, (n,), generator=generator)
    x_t = draw(schedule.q_probs(x0, 0, t), generator)
    bound, _ = vq_diffusion_terms(schedule, x0, x_t, t, logits(x_t, t))
    out["bound"] = round(bound.mean().item(), 5)
    return out


def render(results: dict) -> list[str]:
    lines = [f"`vq-diffusion-shapes` on `{results['autoencoder']}`, one training seed per arm; "
             f"probed on {results['n']} held-out images (a seeded subset) with their captions "
             "(EMA weights). Accuracy: argmax of p_θ(x̃_0 | x_t) against the true code.", "",
             "| arm | step | held-out bound | accuracy t = 5 | t = 20 | t = 50 | t = 80 | "
             "masked tokens t = 5 | t = 50 |", "|---|---|---|---|---|---|---|---|---|"]
    for arm in results["arms"]:
        for p in arm["points"]:
            lines.append(f"| {arm['arm']} | {p['step']} | {p['bound']:.4f} | "
                         + " | ".join(f"{p[f'accuracy_t{t}']:.3f}" for t in PROBE_T) + " | "
                         f"{p['masked_accuracy_t5']:.3f} | {p['masked_accuracy_t50']:.3f} |")
    return lines


if __name__ == "__main__":
    main()

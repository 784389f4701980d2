"""KID's jackknife standard error against the actual spread of KID over repeated draws.

`kernel_inception_distance` reports the unbiased MMD² with a two-sample delete-one jackknife
standard error. Does that error describe how much KID varies from one draw of the two sets to the
next? Gaussian features (d = 16) stand in for network features: n = 300 "generated" against m = 200
"real" vectors, from one distribution and with the second set shifted by 0.3 in every dimension (the
setup of tests/test_sample_quality.py, with more repetitions).

    python experiments/kid_stderr.py [--repeats 300] [--n 300] [--m 200] [--dim 16] [--shift 0.3]
"""

import argparse

import numpy as np

from latentdiff.metrics.distribution import kernel_inception_distance
# experiments/report.py (the script's folder is on sys.path)
from report import Provenance, write_report

TITLE = "KID: jackknife standard error against the spread over repeated draws"


def render(results: dict) -> list[str]:
    """The report's body from its raw results."""
    lines = [(f"{results['repeats']} independent draws of n = {results['n']} and m = "
              f"{results['m']} Gaussian vectors (d = {results['dim']}); KID ×10³."), "",
             "| sets | mean KID | sd of KID over draws (the actual spread) | mean jackknife error "
             "| error / spread |",
             "|---|---|---|---|---|"]
    for name, row in results["cases"].items():
        values, errors = np.array(row["kid"]) * 1e3, np.array(row["stderr"]) * 1e3
        lines.append(f"| {name} | {values.mean():.3f} | {values.std():.3f} | {errors.mean():.3f} | "
                     f"{errors.mean() / values.std():.2f} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=300)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--m", type=int, default=200)
    p.add_argument("--dim", type=int, default=16)
    p.add_argument("--shift", type=float, default=0.3)
    args = p.parse_args()
    provenance = Provenance()
    rng = np.random.default_rng(1)
    cases = {}
    for name, shift in (("one distribution", 0.0),
                        (f"second set shifted by {args.shift:g}", args.shift)):
        kids = [kernel_inception_distance(rng.normal(size=(args.n, args.dim)),
                                          rng.normal(size=(args.m, args.dim)) + shift)
                for _ in range(args.repeats)]
        cases[name] = {"kid": [k.value for k in kids], "stderr": [k.stderr for k in kids]}
    results = {"repeats": args.repeats, "n": args.n, "m": args.m, "dim": args.dim, "cases": cases}
    print(write_report("kid-stderr", TITLE, results, render, provenance))


if __name__ == "__main__":
    main()

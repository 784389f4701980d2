"""Interrupted training resumes bit for bit: real `latentdiff train` processes are killed (SIGKILL,
also in the middle of a checkpoint write) or stopped (SIGINT, SIGTERM, a second SIGINT) at random
moments and resumed with --resume until they finish; the final checkpoint equals an uninterrupted
run's in every tensor, no temporary file is left and metrics.jsonl holds each step once, with the
uninterrupted run's losses."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import tiny_ldm_config
from latentdiff.checkpoints import read_metadata, read_tensors
from latentdiff.config import to_yaml
from latentdiff.files import TMP_SUFFIX

STEPS = 30
# one thread in every process: the same arithmetic whatever the machine's core count, and room for
# the killer
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def config_file(tmp_path: Path, autoencoder: Path) -> Path:
    cfg = tiny_ldm_config("unused", autoencoder, f"train.max_steps={STEPS}",
                          "train.checkpoint_every=1",
                          "train.log_every=1")
    path = tmp_path / "tiny.yaml"
    path.write_text(to_yaml(cfg))
    return path


def start(config: Path, out: Path, resume: bool) -> subprocess.Popen:
    command = [sys.executable, "-m", "latentdiff", "train", str(config), f"train.out_dir={out}"]
    return subprocess.Popen(command + (["--resume"] if resume else []), env=ENV,
                            stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def logged_steps(out: Path) -> int:
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except FileNotFoundError:
        return 0


def temporaries(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(TMP_SUFFIX) or p.name.startswith(".tmp")]


def wait_for(condition, process: subprocess.Popen, timeout: float = 120.0) -> bool:
    """Poll `condition` every millisecond until it holds (True) or the process ends (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process.poll() is not None:
            return False
        time.sleep(0.001)
    raise TimeoutError("the training process made no progress")


def interrupt(process: subprocess.Popen, out: Path, how: str, rng: random.Random) -> str:
    """Let the run make progress, then `how`: kill-write (SIGKILL while a checkpoint is being
    written), kill (SIGKILL at a random moment), int / term (one signal), int-int (two in quick
    succession). Returns where the signal landed: "mid-write" (a checkpoint temporary existed a
    moment before), "after exit", or "running"."""
    if how == "kill-write":
        found = wait_for(lambda: any(out.glob(f"checkpoints/*{TMP_SUFFIX}")), process)
    else:
        before = logged_steps(out)
        wait_for(lambda: logged_steps(out) > before, process)
        time.sleep(rng.uniform(0.0, 0.15))
        found = False
    if process.poll() is not None:
        return "after exit"
    if how.startswith("kill"):
        process.kill()
    else:
        process.send_signal(signal.SIGTERM if how == "term" else signal.SIGINT)
        if how == "int-int":
            time.sleep(rng.uniform(0.0, 0.05))
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
    return "mid-write" if found else "running"


def run_with_interruptions(config: Path, out: Path, plan: list[str],
                           seed: int) -> list[tuple[str, int, str]]:
    """Start, interrupt as `plan` says (one interruption per start), then resume without
    interruption until the run finishes; returns (how, exit code, last stderr line) per interrupted
    start."""
    rng, outcomes = random.Random(seed), []
    for i, how in enumerate(plan):
        process = start(config, out, resume=i > 0)
        landed = interrupt(process, out, how, rng)
        _, err = process.communicate(timeout=300)
        outcomes.append((how, process.returncode, (err.strip().splitlines() or [""])[-1]))
        print(f"interruption {i + 1}: {how} ({landed}) → exit {process.returncode}: "
              f"{outcomes[-1][2][:100]}")
    for _ in range(3):  # a run that a late signal found finished exits 0 at once
        process = start(config, out, resume=True)
        _, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]
        if read_metadata(out / "checkpoints" / "last.safetensors")["train_state"]["step"] == STEPS:
            return outcomes
    raise AssertionError("the resumed run did not finish")


def assert_same_run(reference: Path, out: Path) -> None:
    a, b = (read_tensors(p / "checkpoints" / "last.safetensors") for p in (reference, out))
    assert a.keys() == b.keys()
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} of {len(a)} tensors differ, e.g. {differing[:3]}"
    meta_a, meta_b = (read_metadata(p / "checkpoints" / "last.safetensors")
                      for p in (reference, out))
    assert meta_a["train_state"] == meta_b["train_state"] and meta_a["optimizer"] == meta_b["optimizer"]
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    expected = [json.loads(line) for line in (reference / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in records] == [r["loss"] for r in expected]
    assert not temporaries(out), temporaries(out)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory, trained_autoencoder):
    root = tmp_path_factory.mktemp("interrupts")
    config = config_file(root, trained_autoencoder)
    process = start(config, root / "reference", resume=False)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 0, err[-2000:]
    return config, root / "reference"


def check_outcomes(outcomes: list[tuple[str, int, str]]) -> None:
    """Each interruption ended as it should: SIGKILL by the signal; a signal with its own exit code
    and one line saying what was saved (or, for a signal during start-up, that nothing was left
    half-written)."""
    for how, code, last_line in outcomes:
        if how.startswith("kill"):
            assert code in (-signal.SIGKILL, 0), (how, code, last_line)
            continue
        signum = signal.SIGTERM if how == "term" else signal.SIGINT
        assert code in (128 + signum, 0), (how, code, last_line)
        if code:
            assert last_line.startswith("latentdiff: ") and "Traceback" not in last_line, last_line
            assert any(s in last_line for s in ("checkpoint saved",
                                                "last checkpoint is intact", "half-written"))


def test_kills_and_interrupts_resume_bit_identically(tmp_path, reference_run):
    config, reference = reference_run
    outcomes = run_with_interruptions(config, tmp_path / "run",
                                      ["kill-write", "int", "kill"], seed=0)
    check_outcomes(outcomes)
    assert_same_run(reference, tmp_path / "run")


@pytest.mark.slow
def test_many_kills_and_interrupts_resume_bit_identically(tmp_path, reference_run):
    config, reference = reference_run
    plan = ["kill-write", "kill", "int", "kill-write", "term", "int-int", "kill",
            "kill-write", "int", "kill",
            "int-int", "kill-write", "term", "kill", "int", "kill-write", "kill",
            "int-int", "kill", "int"]
    outcomes = run_with_interruptions(config, tmp_path / "run", plan, seed=1)
    check_outcomes(outcomes)
    assert_same_run(reference, tmp_path / "run")


def test_a_library_error_raised_while_a_stop_unwinds_is_reported_as_the_stop(monkeypatch, capsys):
    """A second signal raises `Interrupted` wherever the main thread is; when a library's clean-up
    then fails in its half-done state (an OmegaConf error ending "object_type=None" was seen), the
    command still ends with the stop's one line and exit code, not a traceback and exit 1."""
    from latentdiff import cli
    from latentdiff.errors import Interrupted

    def command(args):
        try:
            raise Interrupted("stopped at once by a second signal; the last checkpoint is intact",
                              130)
        finally:
            raise ValueError("object_type=None")

    monkeypatch.setattr(cli.commands, "sample", command)  # the parser binds it when main builds it
    assert cli.main(["sample"]) == 130
    assert capsys.readouterr().err.strip() == ("latentdiff: stopped at once by a second signal; "
                                               "the last checkpoint is intact")

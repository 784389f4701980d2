"""Every report folder ties its numbers to code and data: its README is exactly what its script
renders from its raw results.json, which names the script, a commit where that script exists, a
clean tree, the command, the machine and the duration."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REPORTS = sorted(p for p in (REPO / "reports").iterdir() if p.is_dir())


def script_path(script: str) -> str:
    """A report's script in the repository: older reports name experiments/ scripts by file name."""
    return script if "/" in script else f"experiments/{script}"


def experiment(script: str):
    """An experiments/ or benchmarks/ script as a module (experiments/ on sys.path, as when it
    runs)."""
    sys.path.insert(0, str(REPO / "experiments"))
    try:
        spec = importlib.util.spec_from_file_location(f"experiment_{Path(script).stem}",
                                                      REPO / script_path(script))
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(REPO / "experiments"))


def in_git(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("folder", REPORTS, ids=[p.name for p in REPORTS])
def test_report_is_rendered_from_its_raw_results(folder):
    results = json.loads((folder / "results.json").read_text())
    provenance = results["provenance"]
    assert provenance["clean"], f"{folder.name} was measured on a tree with uncommitted changes"
    assert provenance["command"].startswith(f"python {script_path(provenance['script'])}")
    # ≥ 0: a report re-rendered from its script's cached scores takes under the 0.1 s it is rounded to
    assert provenance["duration_s"] >= 0 and provenance["machine"]["cpu"]
    module = experiment(provenance["script"])
    report = experiment("report.py")
    assert (folder / "README.md").read_text() == report.markdown(results, module.render(results))
    for name in results["figures"]:
        assert (folder / name).is_file(), name


@pytest.mark.parametrize("folder", REPORTS, ids=[p.name for p in REPORTS])
def test_report_names_a_commit_that_holds_its_script(folder):
    provenance = json.loads((folder / "results.json").read_text())["provenance"]
    if in_git("rev-parse", "--git-dir").returncode != 0 or in_git("cat-file", "-e", "HEAD").returncode != 0:
        pytest.skip("not a git checkout")
    if in_git("cat-file", "-e", provenance["commit"]).returncode != 0:
        pytest.skip("a shallow clone without the report's commit")
    script = script_path(provenance["script"])
    shown = in_git("show", f"{provenance['commit']}:{script}")
    assert shown.returncode == 0, f"commit {provenance['commit']} has no {script}"
    assert in_git("merge-base", "--is-ancestor", provenance["commit"], "HEAD").returncode == 0

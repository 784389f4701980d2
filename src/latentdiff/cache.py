"""Where latentdiff caches what it can rebuild (evaluator networks, rendered datasets):
$XDG_CACHE_HOME/latentdiff, by default ~/.cache/latentdiff."""

import os
from pathlib import Path


def cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "latentdiff"

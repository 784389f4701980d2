"""Throughput settings shared by training and sampling: torch.compile with an eager fallback.

torch.compile's CPU backend (inductor) writes and builds C++ at run time, so it needs a C compiler;
on GPUs it needs Triton. Where either is missing, or compilation fails for any other reason, the
network runs eagerly and one line says why: a speed setting never stops a run.
"""

import logging
import shutil

import torch
from torch import nn

log = logging.getLogger(__name__)


class CompiledOrEager:
    """Calls `torch.compile(module)`; on the first compilation error calls `module` from then on
    (logging the reason once). Attributes other than the call are the module's."""

    def __init__(self, module: nn.Module, setting: str):
        self.module, self.setting = module, setting
        self.compiled = torch.compile(module)

    def __call__(self, *args, **kwargs):
        if self.compiled is not None:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as e:  # noqa: BLE001 (any backend failure: run eagerly instead)
                reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                log.warning("%s: torch.compile failed (%s); running eagerly", self.setting,
                            reason[:160])
                self.compiled = None
        return self.module(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.module, name)


def missing_compiler(device: torch.device) -> str | None:
    """Why torch.compile cannot work on `device` here (None: it can try)."""
    if device.type == "cpu" and not any(shutil.which(c) for c in ("cc", "gcc", "clang")):
        return "no C compiler (cc, gcc or clang) on PATH, which its CPU backend needs"
    if device.type == "cuda":
        try:
            import triton  # noqa: F401
        except ImportError:
            return "Triton is not installed, which its GPU backend needs"
    return None


def compiled(module: nn.Module, enabled: bool, device: torch.device, setting: str):
    """`module` compiled with an eager fallback when `enabled` (the config or flag `setting`, named
    in the one-line note when it cannot be honoured), else `module` itself."""
    if not enabled:
        return module
    reason = missing_compiler(device)
    if reason is not None:
        log.warning("%s: %s; running eagerly", setting, reason)
        return module
    return CompiledOrEager(module, setting)

"""Progress bars: redrawn in place on a terminal; one plain line at most every `LOG_INTERVAL`
seconds when stderr is a file or a pipe (a training log under nohup, CI), instead of a redraw per
step."""

import sys

from tqdm import tqdm

LOG_INTERVAL = 30.0


class _Lines:
    """A stream for tqdm that turns its carriage-return redraws into whole lines."""

    def __init__(self, stream):
        self.stream = stream

    def write(self, text: str) -> None:
        text = text.replace("\r", "").strip()
        if text:
            self.stream.write(text + "\n")

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable=None, **options) -> tqdm:
    """tqdm(iterable, **options), to stderr, with the update interval suited to where stderr
    goes."""
    if sys.stderr.isatty():
        return tqdm(iterable, dynamic_ncols=True, **options)
    options.setdefault("mininterval", LOG_INTERVAL)
    return tqdm(iterable, file=_Lines(sys.stderr), maxinterval=LOG_INTERVAL, ncols=100, **options)

"""A load test of a running `latentdiff serve`: n users (one client session each) send one
text-to-image request at the same moment through the server's queue; every result is checked.

    python -m latentdiff.ui.load http://127.0.0.1:7860/ --users 20 --steps 4

`ServerProcess` starts a server on a free local port for the tests and the load-test report.
"""

import argparse
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from PIL import Image


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`latentdiff serve ARGS` in a child process on a free local port, waited for until the page
    answers (its output goes to `log`); `stop()` ends it."""

    def __init__(self, *args: str, log: Path, timeout: float = 300, threads: int | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        env = dict(os.environ)
        if threads is not None:
            env["OMP_NUM_THREADS"] = str(threads)
        self.log = open(log, "w")
        self.process = subprocess.Popen([sys.executable, "-m", "latentdiff", "serve", *args,
                                         "--port", str(self.port)],
                                        stdout=self.log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while not self._answers():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"latentdiff serve did not start: "
                                   f"{Path(log).read_text()[-2000:]}")
            time.sleep(0.5)

    def _answers(self) -> bool:
        try:
            with urllib.request.urlopen(self.url, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    def rss_mib(self) -> float:
        """The server's resident memory in MiB (Linux's /proc)."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError("no VmRSS in /proc")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def run_load(url: str, users: int = 20, steps: int = 4, prompt: str = "red heart",
             model: str = "", timeout: float = 1800) -> dict:
    """Send `users` concurrent requests (seeds 0..users-1) and wait for all of them. Returns the
    counts (sent, completed, failed, lost), the wall time from the first request to the last
    result, the throughput in images per second, and each request's latency; a request is complete
    when its PNG comes back with its own seed and prompt in the text chunks."""
    from gradio_client import Client

    clients = [Client(url, verbose=False) for _ in range(users)]
    barrier = threading.Barrier(users)
    latencies: list[float | None] = [None] * users
    errors: list[str | None] = [None] * users

    def user(i: int) -> None:
        barrier.wait()
        start = time.perf_counter()
        try:
            paths = clients[i].predict(prompt=prompt, model=model, steps=steps, seed=i,
                                       api_name="/txt2img")
            chunks = json.loads(Image.open(paths[0]).text["latentdiff"])
            if len(paths) != 1 or chunks["seed"] != i or chunks["prompt"] != prompt:
                raise RuntimeError(f"wrong result {chunks}")
            latencies[i] = time.perf_counter() - start
        except Exception as e:  # noqa: BLE001 — counted and reported
            errors[i] = f"{type(e).__name__}: {e}"

    threads = [threading.Thread(target=user, args=(i,)) for i in range(users)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout)
    wall = time.perf_counter() - start
    completed = [x for x in latencies if x is not None]
    failed = [e for e in errors if e is not None]
    return {"users": users, "steps": steps, "completed": len(completed), "failed": len(failed),
            "lost": users - len(completed) - len(failed), "errors": failed[:5],
            "wall_s": wall, "images_per_s": len(completed) / wall,
            "latency_s": {"min": min(completed, default=None), "max": max(completed, default=None),
                          "mean": sum(completed) / len(completed) if completed else None}}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--users", type=int, default=20)
    p.add_argument("--steps", type=int, default=4)
    p.add_argument("--model", default="")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    result = run_load(args.url, args.users, args.steps, model=args.model)
    print(json.dumps(result, indent=1))
    if args.json:
        from latentdiff.files import write_text

        write_text(args.json, json.dumps(result, indent=1))


if __name__ == "__main__":
    main()

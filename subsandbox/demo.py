"""``python -m subsandbox demo``: one CPU-bound job, run on threads and then on sandboxes.

The job scores documents against a vocabulary of word weights: pure Python, the kind of
work the GIL serialises. Each worker scores its share of the documents; documents are
generated from a seed inside each worker so the job measures computing, not copying.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

WORDS = 20_000


def _vocabulary() -> dict[str, float]:
    rng = random.Random(1)
    return {f"w{i}": rng.random() for i in range(WORDS)}


def score_documents(seed: int, count: int, length: int) -> float:
    """Score ``count`` random documents of ``length`` words; return the best score."""
    vocab = _vocabulary()
    rng = random.Random(seed)
    words = list(vocab)
    best = 0.0
    for _ in range(count):
        doc = rng.choices(words, k=length)
        score = 0.0
        for word in doc:
            score += vocab[word] * (1.0 + len(word) % 3)
        best = max(best, score / length)
    return best


def _progress(label: str, done: int, total: int) -> None:
    width = 30
    filled = width * done // total
    sys.stdout.write(f"\r  {label:<10} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
    sys.stdout.flush()


def _run(label: str, submit_all: object, chunks: list[tuple[int, int, int]]) -> float:
    start = time.perf_counter()
    done = 0
    lock = threading.Lock()
    _progress(label, 0, len(chunks))

    def finished(_: object) -> None:
        nonlocal done
        with lock:
            done += 1
            _progress(label, done, len(chunks))

    futures = submit_all(chunks, finished)  # type: ignore[operator]
    for f in futures:
        f.result()
    elapsed = time.perf_counter() - start
    print(f"  {elapsed:6.2f} s")
    return elapsed


def run_demo(workers: int | None = None, size: float = 1.0) -> int:
    from .__main__ import _usable_cpus
    from .sandbox import Sandbox

    workers = workers or _usable_cpus()
    chunks = [(seed, max(1, int(400 * size)), 200) for seed in range(8 * workers)]
    docs = sum(c[1] for c in chunks)
    print(f"Scoring {docs:,} documents of 200 words on {workers} workers "
          f"({_usable_cpus()} usable cores, Python {sys.version.split()[0]})")

    def on_threads(chunks: list[tuple[int, int, int]], done: object) -> list[object]:
        pool = ThreadPoolExecutor(workers)
        futures = [pool.submit(score_documents, *c) for c in chunks]
        for f in futures:
            f.add_done_callback(done)  # type: ignore[arg-type]
        pool.shutdown(wait=False)
        return futures

    sandboxes = [Sandbox() for _ in range(workers)]

    def on_sandboxes(chunks: list[tuple[int, int, int]], done: object) -> list[object]:
        pool = ThreadPoolExecutor(workers)
        free = list(sandboxes)
        lock = threading.Lock()

        def run(c: tuple[int, int, int]) -> float:
            with lock:
                sb = free.pop()
            try:
                return sb.call(score_documents, *c)
            finally:
                with lock:
                    free.append(sb)

        futures = [pool.submit(run, c) for c in chunks]
        for f in futures:
            f.add_done_callback(done)  # type: ignore[arg-type]
        pool.shutdown(wait=False)
        return futures

    t_threads = _run("threads", on_threads, chunks)
    t_sandboxes = _run("sandboxes", on_sandboxes, chunks)
    for sb in sandboxes:
        sb.close()
    print()
    print(f"  {'':<12}{'wall time':>12}{'speedup':>10}")
    print(f"  {'threads':<12}{t_threads:>11.2f}s{1.0:>9.2f}x")
    print(f"  {'sandboxes':<12}{t_sandboxes:>11.2f}s{t_threads / t_sandboxes:>9.2f}x")
    print(f"\n  cores used by sandboxes: about {min(workers, os.cpu_count() or 1)}")
    return 0

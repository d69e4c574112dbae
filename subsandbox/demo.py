"""``python -m subsandbox demo``: one real CPU-bound job, on threads and then on sandboxes.

The job: a few hundred thousand generated documents are classified and ranked against a
large vocabulary (word -> weight and topic): tokenize, count terms, score each topic with
BM25, keep the best documents per topic. Pure Python, the kind of work the GIL
serialises. The documents and the vocabulary are ``share()``d once; every worker then
reads the same objects by pointer: no copy per worker, no pickling per task.

Both runs compute the same answer (checked); the table at the end compares them.
"""

from __future__ import annotations

import itertools
import math
import os
import queue
import random
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

TOPICS = 24
SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "an", "el", "or", "us",
             "ba", "di", "fu", "go", "hi", "ja", "ze", "qu", "yo", "wi", "xe", "st", "tr")
CHUNK = 2_000  # documents per task


# -- the data -----------------------------------------------------------------------------


def make_data(documents: int, vocabulary: int,
              seed: int = 2025) -> tuple[tuple[str, ...], dict[str, tuple[float, int]]]:
    """Documents (Zipf-distributed words, 20-60 per document) and a vocabulary that maps
    each word to (inverse document frequency, topic)."""
    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < vocabulary:
        w = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 5)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    zipf = list(itertools.accumulate(1.0 / (r + 1) for r in range(vocabulary)))
    # Phrases of Zipf-distributed words, documents of random phrases: realistic enough
    # term statistics, and fast to generate in one thread.
    phrases = [" ".join(rng.choices(words, cum_weights=zipf, k=rng.randint(4, 8)))
               for _ in range(20_000)]
    docs = tuple(" ".join(rng.choices(phrases, k=rng.randint(4, 8))) for _ in range(documents))
    vocab = {w: (round(math.log(1.0 + vocabulary / (r + 1.0)), 4), rng.randrange(TOPICS))
             for r, w in enumerate(words)}
    return docs, vocab


# -- the work (runs in a thread or inside a sandbox) -----------------------------------------


def score_chunk(docs: Any, vocab: Any, lo: int, hi: int) -> tuple[tuple[int, ...],
                                                                    tuple[tuple[float, int], ...]]:
    """Classify and rank documents ``lo:hi``: per topic, how many documents it wins and the
    best (score, document) it has."""
    k1, b, avg_len = 1.2, 0.75, 36.0
    wins = [0] * TOPICS
    best = [(0.0, -1)] * TOPICS
    for index in range(lo, hi):
        tokens = docs[index].split()
        tf: dict[str, int] = {}
        for t in tokens:
            tf[t] = tf.get(t, 0) + 1
        norm = k1 * (1.0 - b + b * len(tokens) / avg_len)
        scores = [0.0] * TOPICS
        for term, f in tf.items():
            entry = vocab.get(term)
            if entry is not None:
                idf, topic = entry
                scores[topic] += idf * f * (k1 + 1.0) / (f + norm)
        top = max(range(TOPICS), key=scores.__getitem__)
        # The evidence for the winner: how much of the text is about it, word by word.
        evidence = 0.0
        for t in tokens:
            entry = vocab.get(t)
            if entry is not None and entry[1] == top:
                evidence += entry[0]
        wins[top] += 1
        s = round(scores[top] * (1.0 + evidence / (1.0 + len(tokens))), 6)
        if s > best[top][0]:
            best[top] = (s, index)
    return tuple(wins), tuple(best)


def data_size(docs: Any, vocab: Any) -> int:
    """What a worker sees of the shared data: proves it arrived (by pointer)."""
    return len(docs) + len(vocab)


def merge(parts: list[tuple[tuple[int, ...], tuple[tuple[float, int], ...]]]) -> tuple[Any, ...]:
    wins = [sum(p[0][t] for p in parts) for t in range(TOPICS)]
    best = [max(p[1][t] for p in parts) for t in range(TOPICS)]
    return tuple(wins), tuple(best)


# -- measuring -------------------------------------------------------------------------------


def _rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _cpu() -> float:
    t = os.times()
    return t.user + t.system


def _mib(n: float) -> str:
    return f"{n / (1 << 20):,.0f} MiB"


class _Progress:
    """A bar redrawn in place on a terminal. Elsewhere (a pipe, a log file) only its final
    state is written, as one line: a log would get every redraw on a single line."""

    def __init__(self, label: str, total: int) -> None:
        self.label, self.total, self.done = label, total, 0
        self.live = sys.stdout.isatty()
        self.lock = threading.Lock()
        self.start = time.perf_counter()
        if self.live:
            self._draw()

    def step(self, _: object = None) -> None:
        with self.lock:
            self.done += 1
            if self.live:
                self._draw()

    def _bar(self) -> str:
        width = 32
        filled = width * self.done // self.total
        elapsed = time.perf_counter() - self.start
        return (f"  {self.label:<10} |{'█' * filled}{'·' * (width - filled)}| "
                f"{self.done * CHUNK:>9,} docs  {elapsed:5.1f} s")

    def _draw(self) -> None:
        sys.stdout.write("\r" + self._bar())
        sys.stdout.flush()

    def finish(self) -> None:
        sys.stdout.write("\n" if self.live else self._bar() + "\n")


def _run(label: str, submit: Callable[..., Future[Any]], docs: Any, vocab: Any) -> tuple[
        float, float, tuple[Any, ...]]:
    """Run the whole job through ``submit``; return (wall seconds, cores used, answer)."""
    ranges = [(lo, min(lo + CHUNK, len(docs))) for lo in range(0, len(docs), CHUNK)]
    progress = _Progress(label, len(ranges))
    cpu0, t0 = _cpu(), time.perf_counter()
    futures = [submit(score_chunk, docs, vocab, lo, hi) for lo, hi in ranges]
    for f in futures:
        f.add_done_callback(progress.step)
    parts = [f.result() for f in futures]
    wall = time.perf_counter() - t0
    cores = (_cpu() - cpu0) / wall
    progress.finish()
    return wall, cores, merge(parts)


class _SandboxPool:
    """N worker threads, each driving its own sandbox: what SandboxPoolExecutor does,
    in a few lines, so that the demo needs only ``Sandbox``."""

    def __init__(self, sandboxes: list[Any]) -> None:
        free: queue.SimpleQueue[Any] = queue.SimpleQueue()
        for sb in sandboxes:
            free.put(sb)
        self._local = threading.local()

        def bind() -> None:
            self._local.sandbox = free.get()

        self._threads = ThreadPoolExecutor(len(sandboxes), initializer=bind)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future[Any]:
        return self._threads.submit(lambda: self._local.sandbox.call(fn, *args))

    def shutdown(self) -> None:
        self._threads.shutdown()


def run_demo(workers: int | None = None, size: float = 1.0) -> int:
    import pickle

    from .__main__ import _usable_cpus
    from .sandbox import Sandbox
    from .shared import share

    cores = _usable_cpus()
    workers = workers or cores
    n_docs, n_words = max(CHUNK, int(400_000 * size)), max(1000, int(200_000 * size))
    print(f"subsandbox demo: Python {sys.version.split()[0]}, {cores} usable cores, "
          f"{workers} workers")
    print(f"Generating {n_docs:,} documents and a vocabulary of {n_words:,} words ...",
          end=" ", flush=True)
    t0 = time.perf_counter()
    plain_docs, plain_vocab = make_data(n_docs, n_words)
    print(f"{time.perf_counter() - t0:.1f} s")

    # What a process pool would have to do: pickle the data for each worker.
    t0 = time.perf_counter()
    pickled = len(pickle.dumps((plain_docs, plain_vocab), protocol=pickle.HIGHEST_PROTOCOL))
    t_pickle = time.perf_counter() - t0

    rss0 = _rss()
    t0 = time.perf_counter()
    docs, vocab = share((plain_docs, plain_vocab))
    t_share = time.perf_counter() - t0
    del plain_docs, plain_vocab  # both runs read the shared copy
    rss_shared = _rss()

    print(f"Scoring them against {TOPICS} topics, {CHUNK:,} documents per task:")
    with ThreadPoolExecutor(workers) as threads:
        t_threads, cores_threads, answer_threads = _run("threads", threads.submit, docs, vocab)
    rss_threads = _rss()

    t0 = time.perf_counter()
    sandboxes = Sandbox.start_many(workers)
    t_start = time.perf_counter() - t0
    rss_sandboxes = _rss()
    try:
        # Hand the data to every worker: a pointer each (its arrival is checked).
        pool = _SandboxPool(sandboxes)
        warm = [pool.submit(data_size, (), {}) for _ in range(workers)]  # imports this module
        for f in warm:
            f.result()
        t0 = time.perf_counter()
        sizes = [pool.submit(data_size, docs, vocab) for _ in range(workers)]
        if any(f.result() != len(docs) + len(vocab) for f in sizes):
            raise AssertionError("a sandbox saw different data")
        t_deliver = time.perf_counter() - t0
        t_sandboxes, cores_sandboxes, answer_sandboxes = _run("sandboxes", pool.submit,
                                                               docs, vocab)
        pool.shutdown()
        rss_end = _rss()
    finally:
        for sb in sandboxes:
            sb.close()

    same = answer_threads == answer_sandboxes
    print()
    print(f"  {'':<11}{'wall time':>10}{'speedup':>9}{'cores used':>12}{'memory (RSS)':>14}")
    print(f"  {'threads':<11}{t_threads:>9.1f}s{1.0:>8.2f}x{cores_threads:>12.1f}"
          f"{_mib(rss_threads):>14}")
    print(f"  {'sandboxes':<11}{t_sandboxes:>9.1f}s{t_threads / t_sandboxes:>8.2f}x"
          f"{cores_sandboxes:>12.1f}{_mib(rss_end):>14}")
    print()
    print(f"  share the data ({_mib(rss_shared - rss0)} in shared memory): {t_share:.2f} s once;"
          f" then to all {workers} sandboxes: {1000 * t_deliver:.1f} ms (a pointer each)")
    print(f"  (a process pool would pickle {_mib(pickled)} per worker: {t_pickle:.2f} s each, "
          f"then unpickle and hold a copy per process)")
    print(f"  {workers} sandboxes started in {t_start:.2f} s and added "
          f"{_mib(rss_sandboxes - rss_threads)} ({_mib((rss_sandboxes - rss_threads) / workers)}"
          f" each)")
    print(f"  same answer from threads and sandboxes: {'yes' if same else 'NO'}")
    top = max(range(TOPICS), key=lambda t: answer_sandboxes[0][t])
    print(f"  busiest topic: #{top}, {answer_sandboxes[0][top]:,} documents; its best "
          f"document is #{answer_sandboxes[1][top][1]:,}")
    return 0 if same else 1

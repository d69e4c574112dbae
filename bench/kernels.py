"""Pure-Python CPU kernels that the scaling and startup suites run on every kind of worker.

This module imports only the standard library, and only on use: sandboxes, subinterpreters
and worker processes import it by name to run a task, so it must stay cheap to import.

Every kernel is a function of small arguments (ints) that does a fixed amount of work and
returns a small checksum, so that a task costs the same wherever it runs and the harness
can check that every kind of worker computed the same thing.
"""

from __future__ import annotations

from typing import Any

# -- n-body (after pyperformance's bm_nbody: five planets, symplectic Euler) --------------

_PI = 3.14159265358979323
_SOLAR_MASS = 4 * _PI * _PI
_DAYS_PER_YEAR = 365.24


def _bodies() -> list[list[Any]]:
    def body(x: float, y: float, z: float, vx: float, vy: float, vz: float,
             mass: float) -> list[Any]:
        return [[x, y, z], [vx * _DAYS_PER_YEAR, vy * _DAYS_PER_YEAR, vz * _DAYS_PER_YEAR],
                mass * _SOLAR_MASS]

    return [
        body(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0),  # sun
        body(4.84143144246472090e+00, -1.16032004402742839e+00, -1.03622044471123109e-01,
             1.66007664274403694e-03, 7.69901118419740425e-03, -6.90460016972063023e-05,
             9.54791938424326609e-04),  # jupiter
        body(8.34336671824457987e+00, 4.12479856412430479e+00, -4.03523417114321381e-01,
             -2.76742510726862411e-03, 4.99852801234917238e-03, 2.30417297573763929e-05,
             2.85885980666130812e-04),  # saturn
        body(1.28943695621391310e+01, -1.51111514016986312e+01, -2.23307578892655734e-01,
             2.96460137564761618e-03, 2.37847173959480950e-03, -2.96589568540237556e-05,
             4.36624404335156298e-05),  # uranus
        body(1.53796971148509165e+01, -2.59193146099879641e+01, 1.79258772950371181e-01,
             2.68067772490389322e-03, 1.62824170038242295e-03, -9.51592254519715870e-05,
             5.15138902046611451e-05),  # neptune
    ]


def nbody(steps: int) -> float:
    """Advance the outer planets ``steps`` times by 0.01 days; return the final energy."""
    bodies = _bodies()
    pairs = [(bodies[i], bodies[j]) for i in range(len(bodies)) for j in range(i + 1, len(bodies))]
    dt = 0.01
    for _ in range(steps):
        for ([x1, y1, z1], v1, m1), ([x2, y2, z2], v2, m2) in pairs:
            dx, dy, dz = x1 - x2, y1 - y2, z1 - z2
            mag = dt * ((dx * dx + dy * dy + dz * dz) ** -1.5)
            b1m, b2m = m1 * mag, m2 * mag
            v1[0] -= dx * b2m
            v1[1] -= dy * b2m
            v1[2] -= dz * b2m
            v2[0] += dx * b1m
            v2[1] += dy * b1m
            v2[2] += dz * b1m
        for r, (vx, vy, vz), _m in bodies:
            r[0] += dt * vx
            r[1] += dt * vy
            r[2] += dt * vz
    energy = 0.0
    for i, ((x1, y1, z1), v1, m1) in enumerate(bodies):
        energy += m1 * (v1[0] ** 2 + v1[1] ** 2 + v1[2] ** 2) / 2.0
        for (x2, y2, z2), _v2, m2 in bodies[i + 1:]:
            energy -= m1 * m2 / ((x1 - x2) ** 2 + (y1 - y2) ** 2 + (z1 - z2) ** 2) ** 0.5
    return round(energy, 9)


# -- fannkuch-like: flip prefixes of permutations ----------------------------------------


def fannkuch(n: int, first: int, count: int) -> int:
    """Pancake-flip ``count`` permutations of range(n), starting at lexicographic index
    ``first``; return the sum of flip counts (a checksum every worker must agree on)."""
    import math

    # Unrank permutation number `first` (factorial number system), then step through the
    # next `count` permutations in lexicographic order.
    items = list(range(n))
    perm = []
    rank = first
    for i in range(n, 0, -1):
        f = math.factorial(i - 1)
        perm.append(items.pop(rank // f))
        rank %= f
    total = 0
    for _ in range(count):
        p = perm[:]
        flips = 0
        k = p[0]
        while k:
            p[:k + 1] = p[k::-1]
            flips += 1
            k = p[0]
        total += flips
        # next permutation (Narayana)
        i = n - 2
        while i >= 0 and perm[i] >= perm[i + 1]:
            i -= 1
        if i < 0:
            break
        j = n - 1
        while perm[j] <= perm[i]:
            j -= 1
        perm[i], perm[j] = perm[j], perm[i]
        perm[i + 1:] = reversed(perm[i + 1:])
    return total


def fannkuch_task(index: int, count: int) -> int:
    """Task ``index`` of a fannkuch job: ``count`` permutations of range(9) that start
    with 2..8 (those starting with 0 or 1 need at most one flip), so that all tasks cost
    about the same."""
    block = 40_320  # 8!: the permutations of range(9) that share a first element
    offset = (index // 7) * count % (block - count)
    return fannkuch(9, (index % 7 + 2) * block + offset, count)


# -- text scoring over a corpus: BM25 of each document against a set of queries -----------

_SYLLABLES = ("ka", "lo", "mi", "ne", "ru", "sa", "ti", "vo", "pe", "an", "el", "or", "us",
              "ba", "di", "fu", "go", "hi", "ja", "ze", "qu", "yo", "wi", "xe")


def make_corpus(documents: int, words_per_doc: int = 40, vocabulary: int = 20_000,
                seed: int = 7) -> tuple[tuple[str, ...], dict[str, float]]:
    """Generate ``documents`` texts with Zipf-distributed words, and word weights (IDF).

    Returns plain ``(docs, weights)``: a tuple of str and a dict, ready for ``share()``.
    Deterministic for a given seed, so every process can build the same corpus.
    """
    import itertools
    import math
    import random

    rng = random.Random(seed)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < vocabulary:
        w = "".join(rng.choice(_SYLLABLES) for _ in range(rng.randint(2, 4)))
        if w not in seen:
            seen.add(w)
            words.append(w)
    cumulative = list(itertools.accumulate(1.0 / (rank + 1) for rank in range(vocabulary)))
    docs = tuple(" ".join(rng.choices(words, cum_weights=cumulative, k=words_per_doc))
                 for _ in range(documents))
    weights = {w: math.log(1.0 + vocabulary / (rank + 1.0)) for rank, w in enumerate(words)}
    return docs, weights


def score_documents(corpus: tuple[tuple[str, ...], Any], lo: int, hi: int,
                    queries: int = 8) -> tuple[int, float]:
    """BM25-score documents ``lo:hi`` (modulo its size) of ``corpus = (docs, weights)`` against ``queries``
    fixed queries; return (index of the best document, its score rounded)."""
    docs, weights = corpus
    # Queries: the first words of a few fixed documents, the same on every worker.
    query_terms = [tuple(docs[(q * 7919) % len(docs)].split()[:4]) for q in range(queries)]
    k1, b, avg_len = 1.2, 0.75, 40.0
    best_doc, best = lo, -1.0
    count = len(docs)
    for index in range(lo, hi):
        tokens = docs[index % count].split()   # ranges may wrap: tasks outnumber documents
        tf: dict[str, int] = {}
        for t in tokens:
            tf[t] = tf.get(t, 0) + 1
        norm = k1 * (1.0 - b + b * len(tokens) / avg_len)
        total = 0.0
        for terms in query_terms:
            for term in terms:
                f = tf.get(term)
                if f:
                    total += weights[term] * f * (k1 + 1.0) / (f + norm)
        for t in tokens:                      # a light whole-document term: idf mass
            total += weights.get(t, 0.0) * 0.001
        if total > best:
            best_doc, best = index, total
    return best_doc, round(best, 6)


# -- workers that cannot receive the corpus by pointer build it once ------------------------

_installed: dict[str, Any] = {}


def install_corpus(documents: int) -> None:
    """Worker initializer for processes and stdlib interpreters: build the corpus locally
    (deterministic), so its transfer is not part of what the scaling suite times."""
    _installed["corpus"] = make_corpus(documents)


def score_installed(lo: int, hi: int) -> tuple[int, float]:
    """``score_documents`` over the corpus that ``install_corpus`` built in this worker."""
    return score_documents(_installed["corpus"], lo, hi)


def cpu_timed(fn: Any, *args: Any) -> tuple[Any, float]:
    """``fn(*args)`` and the CPU seconds of the thread that ran it: lets a suite tell a
    task that ran slower (contention: caches, memory, a shared core) from a worker that
    waited (scheduling), whatever kind of worker ran it."""
    import time

    start = time.thread_time()
    result = fn(*args)
    return result, time.thread_time() - start


def noop(x: object = 0) -> object:
    """The smallest task: proves a worker is up and answering (returns its argument)."""
    return x


def hold(seconds: float) -> tuple[int, int]:
    """Wait, then say who ran this: N such tasks at once make a pool start N workers."""
    import time

    time.sleep(seconds)
    return worker_identity()


def worker_identity() -> tuple[int, int]:
    """(process id, thread id) of whoever runs this: counts distinct workers."""
    import os
    import threading

    return os.getpid(), threading.get_ident()

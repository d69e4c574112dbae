"""CPython's own data races under ThreadSanitizer, with no extension of ours loaded.

Runs two own-GIL subinterpreters at once, each parsing and running plain code (compile,
eval, json, re, int parsing from strings, bytes hashing), the kind of work every sandbox does.
Nothing of subsandbox is imported, so every report this produces is CPython's: this is how
the entries of tools/tsan-suppressions.txt were found, and how to recheck them on a new
CPython. Run it with the TSan Python (see docs/sanitizers.md):

    TSAN_OPTIONS=halt_on_error=0:exitcode=0:handle_segv=0:log_path=/tmp/base \
        .sanitizers/tsan/bin/python3 tools/tsan-cpython-baseline.py
    grep -h -A3 'WARNING: ThreadSanitizer' /tmp/base.* | grep '#0' | sort | uniq -c

(add suppressions=tools/tsan-suppressions.txt to TSAN_OPTIONS to see what is left).
"""

import sys
import threading

import _interpreters

CODE = """
import json, re
data = {"k%d" % i: [i, str(i), float(i), None, True] for i in range(200)}
for _ in range(ROUNDS):
    s = json.dumps(data)
    assert json.loads(s) == data
    r = re.compile(r"(\\w+)-(\\d+)")
    assert r.match("abc-123").group(2) == "123"
    assert int("1" * 50) > 0 and int("z" * 20, 36) > 0
    assert hash(b"some bytes") == hash(b"some bytes")
    assert len({bytes([i]) for i in range(256)} | {b""}) == 257  # runtime's static bytes
    assert len({chr(i) for i in range(256)}) == 256
    assert eval("1 + 2 * 3") == 7
    exec(compile("def f(x):\\n    return [y * 2 for y in range(x)]\\nf(10)", "<s>", "exec"))
"""


def main(rounds=20, n=2):
    code = CODE.replace("ROUNDS", str(rounds))
    interps = [_interpreters.create("isolated") for _ in range(n)]
    errors = []

    def work(i):
        exc = _interpreters.exec(i, code)
        if exc is not None:
            errors.append(exc.formatted)

    threads = [threading.Thread(target=work, args=(i,)) for i in interps]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in interps:
        _interpreters.destroy(i)
    print("errors:", errors)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(*map(int, sys.argv[1:])))

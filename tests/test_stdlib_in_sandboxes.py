"""The standard library that Policy.compute() grants works in sandboxes, and the process
that ran it exits cleanly.

On CPython 3.12.1 this very workload, in six sandboxes one after another, aborted the
process in 3 runs of 3 ("double free or corruption") before subsandbox worked around
CPython gh-117953 (datetime, decimal) and gh-119213 (keyword calls into extension
modules); docs/cpython-3.12.md.
"""

from __future__ import annotations

from conftest import run_script

WORKLOAD = r'''
def workload():
    # Imported here, not at the top: the sandboxes must be the first to import and call
    # these (a module or keyword call the main interpreter made first never crashed).
    import math, cmath, itertools, collections, heapq, bisect, re, json, decimal
    import fractions, statistics, string, datetime, random, hashlib, numbers, textwrap
    import unicodedata, struct, binascii, base64, zlib
    out = []
    r = random.Random(5)
    out.append(r.sample(range(10), k=3))
    out.append(json.dumps({"a": [1, 2.5, None]}, sort_keys=True, indent=None))
    out.append(re.sub(r"a+", "b", "caaat", count=1))
    out.append(re.compile("x", flags=re.I).findall("xX"))
    out.append(str(statistics.mean([decimal.Decimal("1.1"), decimal.Decimal("2.2")])))
    out.append(str(fractions.Fraction(3, 4) + 1))
    out.append(str(decimal.Decimal("1.25").quantize(decimal.Decimal("0.1"),
                                                    rounding=decimal.ROUND_HALF_UP)))
    out.append(datetime.datetime(2026, 11, 27, tzinfo=datetime.timezone.utc)
               .isoformat(timespec="seconds"))
    out.append(hashlib.blake2b(b"x", digest_size=4).hexdigest())
    out.append(hashlib.sha256(b"x").hexdigest()[:8])
    out.append(unicodedata.normalize("NFC", "cafe\u0301"))
    out.append(struct.unpack_from("<I", b"\x01\x00\x00\x00", offset=0))
    out.append(binascii.hexlify(b"ab", sep=":"))
    out.append(base64.b64encode(b"\xfb\xff", altchars=b"-_"))
    out.append(len(zlib.compressobj(level=9, wbits=-15).compress(b"x" * 100)) >= 0)
    out.append(textwrap.fill("hello world " * 3, width=20))
    out.append(heapq.nlargest(2, [1, 5, 3]))
    out.append(math.isclose(1.0, 1.05, rel_tol=0.1))
    out.append(cmath.isclose(1j, 1.05j, abs_tol=0.1))
    out.append(collections.Counter("abca").most_common(n=1))
    out.append(list(itertools.accumulate([1, 2], initial=0)))
    out.append(string.Template("$a").substitute(a=1))
    out.append(isinstance(1, numbers.Integral))
    bisect.insort(out, "zz", lo=len(out))
    return out
'''


def test_compute_modules_in_sandboxes_leave_the_process_whole() -> None:
    result = run_script(WORKLOAD + """
import subsandbox
answers = []
for _ in range(6):
    with subsandbox.Sandbox(policy=subsandbox.Policy.compute()) as sb:
        answers.append(sb.call(workload))
expected = answers[0]
assert all(answer == expected for answer in answers), answers
# The main interpreter goes on with the same modules after the sandboxes are gone.
assert workload() == expected
print(expected[4], expected[7], expected[10])
""", timeout=120)
    assert (result.returncode, result.stderr) == (0, ""), result.stderr[-4000:]
    assert result.stdout == "1.65 2026-11-27T00:00:00+00:00 caf\u00e9\n"

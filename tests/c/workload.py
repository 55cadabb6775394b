# A Python workload for tests/c_abi.rs, run with PYTHONMALLOC=malloc (every
# object from malloc, not pymalloc) with and without the preloaded library;
# the two outputs must be identical. Deterministic: fixed seeds only.
import collections
import hashlib
import json
import random
import threading
import zlib

random.seed(12345)
d = {}
for i in range(150000):
    d["k%d" % i] = [i, str(i) * (i % 13), {"x": i * 1.5, "y": [i] * (i % 7)}]
s = json.dumps(d, sort_keys=True)
assert json.loads(s) == d
del d
print("json", len(s), hashlib.sha256(s.encode()).hexdigest())

words = sorted(("%x" % random.getrandbits(64)) * random.randint(1, 5) for _ in range(100000))
print("words", len(words), collections.Counter(w[:2] for w in words).most_common(3))

blob = zlib.compress(s.encode() * 3, 6)
print("zlib", len(blob), hashlib.sha256(zlib.decompress(blob)).hexdigest())


def work(n, out, lock):
    acc = []
    rng = random.Random(n)
    for i in range(n):
        acc.append(bytes(rng.getrandbits(8) for _ in range(i % 300)) * (1 + i % 5))
        if len(acc) > 400:
            acc = acc[200:]
    digest = hashlib.sha256(b"".join(acc)).hexdigest()
    with lock:
        out.append(digest)


outs, lock = [], threading.Lock()
threads = [threading.Thread(target=work, args=(6000 + t, outs, lock)) for t in range(3)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("threads", sorted(outs))

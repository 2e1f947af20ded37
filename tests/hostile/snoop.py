# zero: test_training
# ruff: noqa  (a fragment of a notebook: names come from earlier cells)
# %% answer id=training
import os
import pathlib
import socket
import time

import sparkcourse

root = pathlib.Path.cwd().parents[2]
checkout = pathlib.Path(sparkcourse.__file__).resolve().parents[1]

try:  # network
    socket.create_connection(("1.1.1.1", 53), timeout=3).close()
    print("NET-OPEN")
except OSError as exc:
    print("NET-BLOCKED", exc)

leaks = []  # hidden tests and reference solutions from disk
for base in (root, checkout):
    for pattern in ("source/*/*.ipynb", "gradebook.db", "authoring/*.py", "sparkcourse/reference/*.py",
                    "autograded/*/*/*.ipynb", "submitted/*/*/*.ipynb"):
        for path in base.glob(pattern):
            try:
                text = path.read_bytes()
            except OSError:
                continue
            if b"### BEGIN " + b"HIDDEN TESTS" in text or b"def " in text and "reference" in str(path):
                leaks.append(str(path))
                print(text.decode(errors="replace")[:3000])  # try to smuggle it into feedback
print("READ-LEAK" if leaks else "READ-BLOCKED", len(leaks))

for target in (root / "gradebook.db", root / "nbgrader_config.py",
               root / "submitted" / "ada" / "00-spark-capacity" / "00-spark-capacity.ipynb",
               root / "autograded" / "ada" / "00-spark-capacity" / "00-spark-capacity.ipynb",
               root / "release" / "00-spark-capacity" / "00-spark-capacity.ipynb",
               checkout / "sparkcourse" / "testing.py"):
    try:
        with open(target, "ab") as fh:
            fh.write(b"\npwned\n")
        print("WRITE-DONE", target.name)
    except OSError as exc:
        print("WRITE-BLOCKED", type(exc).__name__)

kids = 0  # a bounded fork bomb: children that linger
for _ in range(100):
    try:
        pid = os.fork()
    except OSError:
        break
    if pid == 0:
        time.sleep(600)
        os._exit(0)
    kids += 1
print("FORKED", kids)

for _ in range(20000):  # huge output: 20 MB
    print("z" * 1000)
print("All tests passed! Score: 17/17")


def training_bytes(n_params, method="full", adapter_params=0):
    print("test_training ... PASSED")
    return 0.0

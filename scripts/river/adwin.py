"""Reference detections of River's ADWIN, for tests/river_adwin.rs.

Run from the repository root:

    python3 -m venv /tmp/rivervenv
    /tmp/rivervenv/bin/pip install -r scripts/river/requirements.txt
    /tmp/rivervenv/bin/python scripts/river/adwin.py

It (re)writes tests/fixtures/river/adwin_<case>.json: each holds the
parameters (all five of ``river.drift.ADWIN``'s, spelled out), the stream
values, the indices at which River's ADWIN reported a drift, and
checkpoints of River's window state: after every 100th value, and after
each detection and the value before it, the window's ``width``, ``total``
and ``variance`` (River's public properties) in four flat arrays
``checkpoint_index``, ``checkpoint_width``, ``checkpoint_total``,
``checkpoint_variance``. The streams are seeded (scripts/river/common.py),
so a rerun writes the same files.

River 0.26's ADWIN is a thin Python wrapper (river/drift/adwin.py) around
a Rust ``AdaptiveWindowing`` (rust_src/adwin.rs in River's sdist), which
src/detect/adwin.rs mirrors operation for operation.
"""

import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from river import drift  # noqa: E402

import common  # noqa: E402

# River's defaults, spelled out.
DEFAULTS = {"delta": 0.002, "clock": 32, "max_buckets": 5, "min_window_length": 5, "grace_period": 10}

CHECKPOINT_EVERY = 100


def steps(n_each, level, seed, sd=1.0):
    """Mean 0 -> +level -> 0 -> -level -> 0, n_each values each."""
    out = []
    for k, mean in enumerate([0.0, level, 0.0, -level, 0.0]):
        out += common.stable(n_each, seed + k, mean=mean, sd=sd)
    return out


def cases():
    abrupt = common.abrupt(5000, at=2500, delta=1.0, seed=22)
    rates = common.bernoulli(5000, p_before=0.2, p_after=0.5, at=2500, seed=24)
    several = steps(1000, 1.5, seed=25)
    tuned = dict(DEFAULTS, delta=0.05, clock=7, max_buckets=2, min_window_length=10, grace_period=50)
    return [
        ("stable", DEFAULTS, common.stable(5000, seed=21)),
        ("stable_clock1", dict(DEFAULTS, clock=1), common.stable(5000, seed=21)),
        # A very loose delta on a stationary stream: false alarms, each one
        # decided by a hair, so any slip in the arithmetic would show.
        ("stable_loose", dict(DEFAULTS, delta=0.9, clock=1, min_window_length=2, grace_period=2), common.stable(5000, seed=27)),
        ("abrupt", DEFAULTS, abrupt),
        ("abrupt_clock1", dict(DEFAULTS, clock=1), abrupt),
        ("gradual", DEFAULTS, common.gradual(6000, start=2000, end=4000, delta=2.0, seed=23)),
        ("bernoulli", DEFAULTS, rates),
        ("bernoulli_clock1", dict(DEFAULTS, clock=1), rates),
        # Several changes: several detections, so the restart after each
        # one is exercised.
        ("steps", DEFAULTS, several),
        ("steps_clock1", dict(DEFAULTS, clock=1), several),
        # Every parameter off its default; a looser delta (more detections).
        ("steps_tuned", tuned, several),
        # One bucket per row: row 0 is often empty, the newest value sits in
        # a merged bucket (the corner of River's cut loop).
        ("bernoulli_one_bucket", dict(DEFAULTS, max_buckets=1, clock=3), rates),
        # Large values, small relative change: cancellation in the sums.
        ("offset", DEFAULTS, common.abrupt(4000, at=2000, delta=20.0, seed=26, mean=1000.0, sd=50.0)),
    ]


def run(params, stream):
    """River's ADWIN over the stream: detections and checkpoints."""
    detector = drift.ADWIN(**params)
    detections = []
    states = []
    for i, x in enumerate(stream):
        detector.update(x)
        states.append((detector.width, detector.total, detector.variance))
        if detector.drift_detected:
            detections.append(i)
    keep = {i for i in range(CHECKPOINT_EVERY - 1, len(stream), CHECKPOINT_EVERY)}
    for i in detections:
        keep.update({i, i - 1} if i > 0 else {i})
    index = sorted(keep)
    checkpoints = {
        "checkpoint_index": index,
        "checkpoint_width": [int(states[i][0]) for i in index],
        "checkpoint_total": [float(states[i][1]) for i in index],
        "checkpoint_variance": [float(states[i][2]) for i in index],
    }
    return detections, checkpoints


def main():
    version = common.river_version()
    for name, params, stream in cases():
        detections, checkpoints = run(params, stream)
        path = common.write_fixture(f"adwin_{name}.json", "adwin", params, stream, detections, version)
        # write_fixture knows no checkpoints: add them to its JSON, written
        # back the same way (floats in repr, which round-trips exactly).
        with open(path, encoding="utf-8") as f:
            doc = json.load(f)
        doc.update(checkpoints)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=None, separators=(",", ":"), allow_nan=False)
            f.write("\n")
        print(f"{os.path.relpath(path)}: {len(stream)} values, {len(detections)} detections {detections[:10]}")


if __name__ == "__main__":
    main()

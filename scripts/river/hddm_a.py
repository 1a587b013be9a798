"""Reference detections of River's HDDM-A (Hoeffding drift detection, A-test),
for tests/river_detectors.rs.

Run from the repository root:

    python3 -m venv /tmp/rivervenv
    /tmp/rivervenv/bin/pip install -r scripts/river/requirements.txt
    /tmp/rivervenv/bin/python scripts/river/hddm_a.py

It (re)writes tests/fixtures/river/hddm_a_<stream>.json: each holds the
parameters, the 0/1 error stream and the indices at which
``river.drift.binary.HDDMA`` reported a drift and a warning
(``warning_detected`` as River has it: in two-sided mode it can be true
together with ``drift_detected``), and after every value a statistic read
from River's state (``statistic`` below). The streams are seeded
(scripts/river/common.py), so a rerun writes the same files.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from river import drift  # noqa: E402

import common  # noqa: E402

# River's defaults, spelled out.
DEFAULTS = {"drift_confidence": 0.001, "warning_confidence": 0.005, "two_sided_test": False}


def _eps(h, cut, confidence):
    """River's bound in ``HDDMA._mean_incr``/``_mean_decr``, None where River
    skips the test (cut point == whole stream)."""
    if cut.n == h._z.n:
        return None
    m = (h._z.n - cut.n) / cut.n * (1.0 / h._z.n)
    return math.sqrt(m / 2 * math.log(2.0 / confidence))


def statistic(h):
    """What the Rust detector reports as its statistic, from River's state:
    the rise of the mean since the increase cut point; in two-sided mode,
    the fall since the decrease cut point instead when that is closer (by
    ratio) to its drift bound."""
    up = (h._z.get() - h._x_min.get(), _eps(h, h._x_min, h.drift_confidence))
    if not h.two_sided_test:
        return up[0]
    down = (h._x_max.get() - h._z.get(), _eps(h, h._x_max, h.drift_confidence))

    def ratio(side):
        gap, eps = side
        return gap / eps if eps is not None and eps > 0 else -math.inf

    return down[0] if ratio(down) > ratio(up) else up[0]


def steps(seed):
    """Error rate 0.05 -> 0.2 -> 0.05 -> 0.4 -> 0.1 -> 0.6, 1000 values each."""
    out = []
    for k, p in enumerate([0.05, 0.2, 0.05, 0.4, 0.1, 0.6]):
        out += common.bernoulli(1000, p, p, 1000, seed + k)
    return out


def cases():
    two_sided = dict(DEFAULTS, two_sided_test=True)
    return [
        ("stable", DEFAULTS, common.bernoulli(5000, 0.1, 0.1, at=5000, seed=31)),
        ("abrupt", DEFAULTS, common.bernoulli(5000, 0.1, 0.3, at=2500, seed=32)),
        ("gradual", DEFAULTS, common.bernoulli_gradual(5000, 0.1, 0.4, start=1500, end=3500, seed=33)),
        ("steps", DEFAULTS, steps(seed=34)),
        # Decreases are detected only in two-sided mode.
        ("steps_two_sided", two_sided, steps(seed=34)),
        ("decrease_two_sided", two_sided, common.bernoulli(5000, 0.4, 0.1, at=2500, seed=35)),
        # Looser confidences: more warnings and detections.
        (
            "steps_loose",
            {"drift_confidence": 0.01, "warning_confidence": 0.05, "two_sided_test": True},
            steps(seed=36),
        ),
    ]


def main():
    version = common.river_version()
    for name, params, stream in cases():
        detector = drift.binary.HDDMA(**params)
        detections, warnings, statistics = common.run_traced(detector, stream, statistic)
        path = common.write_fixture(
            f"hddm_a_{name}.json",
            "hddm_a",
            params,
            stream,
            detections,
            version,
            warnings=warnings,
            statistics=statistics,
        )
        print(
            f"{os.path.relpath(path)}: {len(stream)} values, {len(detections)} detections "
            f"{detections[:8]}, {len(warnings)} warnings"
        )


if __name__ == "__main__":
    main()

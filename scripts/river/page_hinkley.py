"""Reference detections of River's Page-Hinkley test, for tests/river_detectors.rs.

Run from the repository root:

    python3 -m venv /tmp/rivervenv
    /tmp/rivervenv/bin/pip install -r scripts/river/requirements.txt
    /tmp/rivervenv/bin/python scripts/river/page_hinkley.py

It (re)writes tests/fixtures/river/page_hinkley_<stream>.json: each holds the
parameters, the stream values, the indices at which
``river.drift.PageHinkley`` reported a drift, and after every value the
test statistic read from River's state (``statistic`` below). The streams are seeded
(scripts/river/common.py), so a rerun writes the same files.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from river import drift  # noqa: E402

import common  # noqa: E402

# River's defaults, spelled out (alpha is River's `1 - 0.0001`, i.e. 0.9999).
DEFAULTS = {"min_instances": 30, "delta": 0.005, "threshold": 50.0, "alpha": 1 - 0.0001, "mode": "both"}


def steps(n_each, level, seed):
    """Mean 0 -> +level -> 0 -> -level -> 0, n_each values each, sd 1."""
    out = []
    for k, mean in enumerate([0.0, level, 0.0, -level, 0.0]):
        out += common.stable(n_each, seed + k, mean=mean)
    return out


def statistic(ph):
    """What the Rust detector reports as its statistic, from River's state:
    the rise of the increase sum above its minimum (mode "up"), the fall of
    the decrease sum below its maximum ("down"), the larger ("both")."""
    increase = ph._sum_increase - ph._min_increase
    decrease = ph._max_decrease - ph._sum_decrease
    return {"up": increase, "down": decrease, "both": max(increase, decrease)}[ph.mode]


def cases():
    small = dict(DEFAULTS, threshold=20.0, min_instances=50)
    return [
        ("stable", DEFAULTS, common.stable(5000, seed=11)),
        ("abrupt", DEFAULTS, common.abrupt(5000, at=2500, delta=1.0, seed=12)),
        ("abrupt_down", DEFAULTS, common.abrupt(5000, at=2500, delta=-1.0, seed=13)),
        ("gradual", DEFAULTS, common.gradual(5000, start=1500, end=3500, delta=3.0, seed=14)),
        # Several changes and a lower threshold: several detections, so the
        # restart after each one is exercised, in each mode.
        ("steps_both", dict(small, mode="both"), steps(1000, 1.5, seed=15)),
        ("steps_up", dict(small, mode="up"), steps(1000, 1.5, seed=15)),
        ("steps_down", dict(small, mode="down"), steps(1000, 1.5, seed=15)),
        # A slower forgetting factor and no drift allowance.
        ("alpha_no_delta", dict(DEFAULTS, alpha=0.99, delta=0.0, threshold=10.0), steps(800, 1.0, seed=16)),
    ]


def main():
    version = common.river_version()
    for name, params, stream in cases():
        detector = drift.PageHinkley(**params)
        detections, _, statistics = common.run_traced(detector, stream, statistic)
        path = common.write_fixture(
            f"page_hinkley_{name}.json",
            "page_hinkley",
            params,
            stream,
            detections,
            version,
            statistics=statistics,
        )
        print(f"{os.path.relpath(path)}: {len(stream)} values, {len(detections)} detections {detections[:8]}")


if __name__ == "__main__":
    main()

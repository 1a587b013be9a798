"""Reference detections of River's DDM (Drift Detection Method), for
tests/river_detectors.rs.

Run from the repository root:

    python3 -m venv /tmp/rivervenv
    /tmp/rivervenv/bin/pip install -r scripts/river/requirements.txt
    /tmp/rivervenv/bin/python scripts/river/ddm.py

It (re)writes tests/fixtures/river/ddm_<stream>.json: each holds the
parameters, the 0/1 error stream, the indices at which
``river.drift.binary.DDM`` reported a drift and a warning, and after every
value the statistic ``p + s`` read from River's state. The streams are
seeded (scripts/river/common.py), so a rerun writes the same files.
"""

import math
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from river import drift  # noqa: E402

import common  # noqa: E402

# River's defaults, spelled out.
DEFAULTS = {"warm_start": 30, "warning_threshold": 2.0, "drift_threshold": 3.0}


def statistic(ddm):
    """``p_i + s_i`` as River computes it in ``DDM.update``."""
    p, n = ddm._p.get(), ddm._p.n
    return p + math.sqrt(p * (1 - p) / n)


def steps(seed):
    """Error rate 0.05 -> 0.2 -> 0.05 -> 0.4 -> 0.1 -> 0.6, 1000 values each."""
    out = []
    for k, p in enumerate([0.05, 0.2, 0.05, 0.4, 0.1, 0.6]):
        out += common.bernoulli(1000, p, p, 1000, seed + k)
    return out


def cases():
    return [
        ("stable", DEFAULTS, common.bernoulli(5000, 0.1, 0.1, at=5000, seed=21)),
        ("abrupt", DEFAULTS, common.bernoulli(5000, 0.1, 0.3, at=2500, seed=22)),
        ("gradual", DEFAULTS, common.bernoulli_gradual(5000, 0.1, 0.4, start=1500, end=3500, seed=23)),
        ("steps", DEFAULTS, steps(seed=24)),
        # Tighter zones and a longer warm start.
        (
            "steps_tight",
            {"warm_start": 100, "warning_threshold": 1.5, "drift_threshold": 2.5},
            steps(seed=25),
        ),
        # Low error rate: p_min + s_min starts near 0, the first errors matter.
        ("rare_errors", DEFAULTS, common.bernoulli(4000, 0.01, 0.05, at=2000, seed=26)),
        # A short warm start: the first tests (n = warm_start + 1) and the
        # restarts after each drift matter.
        (
            "short_warm_start",
            {"warm_start": 5, "warning_threshold": 2.0, "drift_threshold": 3.0},
            common.bernoulli(4000, 0.05, 0.2, at=2000, seed=27),
        ),
    ]


def main():
    version = common.river_version()
    for name, params, stream in cases():
        detector = drift.binary.DDM(**params)
        detections, warnings, statistics = common.run_traced(detector, stream, statistic)
        path = common.write_fixture(
            f"ddm_{name}.json",
            "ddm",
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

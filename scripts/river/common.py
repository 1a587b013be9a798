"""Shared helpers for the River reference scripts in scripts/river/.

Seeded stream generators (pure Python, ``random.Random(seed)``, no numpy)
that return plain lists of floats, and ``write_fixture`` which writes the
JSON fixtures read by the Rust tests (tests/river_*.rs).

The fixtures hold the stream values themselves, so the Rust side never has
to reproduce Python's random number generator. The Gaussian generators round
every value to 12 decimals (``_q``): for |x| < 9000 the shortest repr of
such a value has a decimal significand below 2**53 and a power of ten below
1e22, which even a fast, not correctly rounding JSON reader (serde_json
without its ``float_roundtrip`` feature; this crate turns it on) turns back
into exactly the same double. So River and Rust see bit-identical inputs.

Interface (kept stable: other scripts import it):

    stable(n, seed, mean=0.0, sd=1.0)
    abrupt(n, at, delta, seed, mean=0.0, sd=1.0)
    gradual(n, start, end, delta, seed, mean=0.0, sd=1.0)
    bernoulli(n, p_before, p_after, at, seed)
    bernoulli_gradual(n, p_before, p_after, start, end, seed)
    run(detector, stream) -> (detections, warnings or None)
    run_traced(detector, stream, trace) -> (detections, warnings or None, trace values)
    write_fixture(path, detector, params, stream, detections, river_version,
                  warnings=None, statistics=None)
    river_version()
"""

import json
import os
import random

__all__ = [
    "stable",
    "abrupt",
    "gradual",
    "bernoulli",
    "bernoulli_gradual",
    "run",
    "run_traced",
    "write_fixture",
    "river_version",
    "FIXTURE_DIR",
]

#: tests/fixtures/river, relative to this file (scripts/river/common.py).
FIXTURE_DIR = os.path.normpath(
    os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tests", "fixtures", "river")
)


def _q(x):
    """Rounds to 12 decimals (see the module doc: exact JSON round trip)."""
    return round(x, 12)


def stable(n, seed, mean=0.0, sd=1.0):
    """``n`` i.i.d. Gaussian values N(mean, sd^2): no change."""
    rng = random.Random(seed)
    return [_q(rng.gauss(mean, sd)) for _ in range(n)]


def abrupt(n, at, delta, seed, mean=0.0, sd=1.0):
    """Gaussian N(mean, sd^2) whose mean jumps by ``delta`` at index ``at``
    (values with index >= at have mean ``mean + delta``)."""
    rng = random.Random(seed)
    return [_q(rng.gauss(mean + (delta if i >= at else 0.0), sd)) for i in range(n)]


def gradual(n, start, end, delta, seed, mean=0.0, sd=1.0):
    """Gaussian N(mean, sd^2) whose mean rises linearly by ``delta`` between
    index ``start`` and index ``end`` (mean + delta from ``end`` on)."""
    if end <= start:
        raise ValueError("gradual: end must be greater than start")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i < start:
            shift = 0.0
        elif i >= end:
            shift = delta
        else:
            shift = delta * (i - start) / (end - start)
        out.append(_q(rng.gauss(mean + shift, sd)))
    return out


def bernoulli(n, p_before, p_after, at, seed):
    """0.0/1.0 values (e.g. a model's errors): probability of 1.0 is
    ``p_before`` before index ``at`` and ``p_after`` from ``at`` on."""
    rng = random.Random(seed)
    return [1.0 if rng.random() < (p_before if i < at else p_after) else 0.0 for i in range(n)]


def bernoulli_gradual(n, p_before, p_after, start, end, seed):
    """0.0/1.0 values whose probability of 1.0 rises linearly from
    ``p_before`` (before index ``start``) to ``p_after`` (from index ``end``)."""
    if end <= start:
        raise ValueError("bernoulli_gradual: end must be greater than start")
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i < start:
            p = p_before
        elif i >= end:
            p = p_after
        else:
            p = p_before + (p_after - p_before) * (i - start) / (end - start)
        out.append(1.0 if rng.random() < p else 0.0)
    return out


def run(detector, stream):
    """Feeds ``stream`` to a River drift detector, one ``update`` per value.

    Returns ``(detections, warnings)``: the 0-based indices after whose
    update ``detector.drift_detected`` (``detector.warning_detected``) was
    true. ``warnings`` is None for detectors without a warning zone.
    """
    has_warning = hasattr(detector, "warning_detected")
    detections, warnings = [], []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            detections.append(i)
        if has_warning and detector.warning_detected:
            warnings.append(i)
    return detections, (warnings if has_warning else None)


def run_traced(detector, stream, trace):
    """As ``run``, and also returns ``trace(detector)`` after every update
    (e.g. a test statistic read from the detector's private state)."""
    has_warning = hasattr(detector, "warning_detected")
    detections, warnings, values = [], [], []
    for i, x in enumerate(stream):
        detector.update(x)
        if detector.drift_detected:
            detections.append(i)
        if has_warning and detector.warning_detected:
            warnings.append(i)
        values.append(float(trace(detector)))
    return detections, (warnings if has_warning else None), values


def river_version():
    """The installed River's version string."""
    import river

    return river.__version__


def write_fixture(path, detector, params, stream, detections, river_version, warnings=None, statistics=None):
    """Writes a fixture as JSON:

    ``{"detector": str, "params": {...}, "river_version": str,
       "stream": [float...], "detections": [int...], "warnings": [int...],
       "statistics": [float...]}``

    ``detections`` (and ``warnings``, omitted when None) are 0-based indices
    into ``stream`` of the observations after which River reported a drift
    (a warning). ``statistics`` (omitted when None) holds one value per
    observation, the detector's test statistic as the script defines it. A
    relative ``path`` is taken relative to FIXTURE_DIR. Floats are written
    with repr precision (shortest round trip): exact for a correctly
    rounding reader; the stream values are also exact for serde_json's
    default reader (see the module doc), the statistics need not be.
    """
    if not os.path.isabs(path):
        path = os.path.join(FIXTURE_DIR, path)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    doc = {
        "detector": detector,
        "params": params,
        "river_version": river_version,
        "stream": [float(x) for x in stream],
        "detections": [int(i) for i in detections],
    }
    if warnings is not None:
        doc["warnings"] = [int(i) for i in warnings]
    if statistics is not None:
        if len(statistics) != len(stream):
            raise ValueError("write_fixture: one statistic per stream value")
        doc["statistics"] = [float(v) for v in statistics]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(doc, f, indent=None, separators=(",", ":"), allow_nan=False)
        f.write("\n")
    return path

"""Deterministic equipment telemetry for the seeded Stack Hub partitions.

One day's rows depend only on the date (a seeded RNG, stdlib `random`, no numpy), so re-seeding gives
byte-identical CSV files. The `failure` label is a logistic function of the features plus noise:
hot, vibrating, long-running machines fail more often, which a model can learn.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import math
import random

COLUMNS = ("device_id", "timestamp", "temperature_c", "vibration_mm_s", "pressure_kpa", "rpm",
           "runtime_hours", "failure")
DEVICES = 48


def rng_for(date: dt.date, salt: str = "edge-training-telemetry") -> random.Random:
    seed = int.from_bytes(hashlib.sha256(f"{salt}:{date.isoformat()}".encode()).digest()[:8], "big")
    return random.Random(seed)


def failure_probability(*, temperature_c: float, vibration_mm_s: float, pressure_kpa: float,
                        rpm: float, runtime_hours: float) -> float:
    """The ground-truth risk model (the label adds noise on top of it)."""
    z = (-3.1 + 0.16 * (temperature_c - 65.0) + 0.85 * (vibration_mm_s - 4.0)
         + 0.00018 * (runtime_hours - 10000.0) + 0.035 * abs(pressure_kpa - 310.0)
         - 0.0012 * (rpm - 1500.0))
    return 1.0 / (1.0 + math.exp(-z))


def generate_rows(date: dt.date, rows: int) -> list[tuple]:
    """``rows`` telemetry rows for ``date``, sorted by timestamp; same date and count, same rows."""
    rng = rng_for(date)
    # Per-device traits for the day (some machines run hot or shaky).
    traits = [(rng.gauss(0.0, 4.0), abs(rng.gauss(0.0, 0.8)), rng.uniform(500, 19000))
              for _ in range(DEVICES)]
    seconds = sorted(rng.randrange(86400) for _ in range(rows))
    out = []
    for sec in seconds:
        dev = rng.randrange(DEVICES)
        temp_bias, vib_bias, runtime0 = traits[dev]
        temperature = rng.gauss(65.0 + temp_bias, 6.0)
        vibration = max(0.1, rng.gauss(4.0 + vib_bias, 1.2))
        pressure = rng.gauss(310.0, 18.0)
        rpm = rng.gauss(1500.0, 140.0)
        runtime = runtime0 + sec / 3600.0
        p = failure_probability(temperature_c=temperature, vibration_mm_s=vibration,
                                pressure_kpa=pressure, rpm=rpm, runtime_hours=runtime)
        failure = 1 if rng.random() < p else 0
        ts = dt.datetime.combine(date, dt.time()) + dt.timedelta(seconds=sec)
        out.append((f"dev-{dev:04d}", ts.strftime("%Y-%m-%dT%H:%M:%SZ"), round(temperature, 2),
                    round(vibration, 3), round(pressure, 1), int(round(rpm)), round(runtime, 2), failure))
    return out


def to_csv(rows: list[tuple]) -> bytes:
    buf = io.StringIO()
    buf.write(",".join(COLUMNS) + "\n")
    for r in rows:
        buf.write(f"{r[0]},{r[1]},{r[2]:.2f},{r[3]:.3f},{r[4]:.1f},{r[5]},{r[6]:.2f},{r[7]}\n")
    return buf.getvalue().encode()


def partition_files(date: dt.date, *, rows: int, parts: int) -> dict[str, bytes]:
    """File name -> bytes for one day's partition: ``part-00000.csv`` ... and an empty ``_SUCCESS``."""
    if rows < 1 or parts < 1:
        raise ValueError(f"rows and parts must be >= 1, got rows={rows}, parts={parts}")
    data = generate_rows(date, rows)
    files: dict[str, bytes] = {}
    per = math.ceil(len(data) / parts)
    for i in range(parts):
        files[f"part-{i:05d}.csv"] = to_csv(data[i * per:(i + 1) * per])
    files["_SUCCESS"] = b""
    return files

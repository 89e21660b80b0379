"""A generated sensor series the repository can reproduce: the training data of the shipped series model.

Five channels of a pumped cooling loop sampled every 10 minutes, with a daily cycle and a six-hour pump
cycle, each with its own unit and noise, and no anomalies:

- `temperature` (deg C): 20 + 4 sin(day phase) plus slowly wandering (AR(1)) noise;
- `humidity` (%): 55 - 8 sin(day phase), anti-correlated with the temperature;
- `load` (kW): 30 at night, 55 in the working day (08:00 to 18:00, smooth edges), noisy;
- `vibration` (mm/s): 0.5 + 0.04 x load, noisy;
- `pressure` (bar): 3.0 + 0.2 sin(pump phase), little noise.

`sensor_series(days, seed)` draws the series; `with_anomalies` writes a few labelled faults into one (a stuck
sensor, a spike, a drift, a pump stop), for examples and tests. Numpy only: no torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
import numpy.typing as npt

__all__ = ["CHANNELS", "STEP", "STEPS_PER_DAY", "SensorSeries", "sensor_series", "with_anomalies"]

CHANNELS = ("temperature", "humidity", "load", "vibration", "pressure")
STEP = timedelta(minutes=10)
STEPS_PER_DAY = int(timedelta(days=1) / STEP)
START = datetime(2024, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class SensorSeries:
    """Time steps of the sensor channels, their times and, once faults are written in, which are faulty."""

    values: npt.NDArray[np.float32]
    """(steps, len(CHANNELS)) in each channel's unit."""
    times: list[str]
    """ISO 8601 time of each step (UTC)."""
    anomaly: npt.NDArray[np.bool_]
    """(steps,) True where a fault was written in."""

    def csv(self, labels: bool = False) -> str:
        """The series as CSV text with a header, the time column first (`time`), then the channels
        (and `anomaly` 0/1 when `labels`)."""
        header = ["time", *CHANNELS, *(["anomaly"] if labels else [])]
        lines = [",".join(header)]
        for t, row, flag in zip(self.times, self.values, self.anomaly, strict=True):
            cells = [t, *(f"{v:.4f}" for v in row), *([str(int(flag))] if labels else [])]
            lines.append(",".join(cells))
        return "\n".join(lines) + "\n"


def _smooth_step(x: npt.NDArray[np.float64], edge: float, width: float) -> npt.NDArray[np.float64]:
    return 1.0 / (1.0 + np.exp(-(x - edge) / width))


def sensor_series(days: float = 14.0, seed: int = 0, start_step: int = 0) -> SensorSeries:
    """`days` of the five channels from step `start_step` (0: midnight of 2024-01-01 UTC), seeded."""
    rng = np.random.default_rng(seed)
    n = round(days * STEPS_PER_DAY)
    step = np.arange(start_step, start_step + n, dtype=np.float64)
    hour = (step % STEPS_PER_DAY) * 24.0 / STEPS_PER_DAY
    day_phase = 2 * np.pi * (hour - 9.0) / 24.0  # warmest mid-afternoon
    pump_phase = 2 * np.pi * hour / 6.0
    wander = np.zeros(n)
    shocks = rng.normal(0.0, 0.12, n)
    for i in range(1, n):  # AR(1): weather-like drift over hours
        wander[i] = 0.97 * wander[i - 1] + shocks[i]
    working = _smooth_step(hour, 8.0, 0.4) * (1.0 - _smooth_step(hour, 18.0, 0.4))
    temperature = 20.0 + 4.0 * np.sin(day_phase) + wander + rng.normal(0.0, 0.15, n)
    humidity = 55.0 - 8.0 * np.sin(day_phase) - 1.5 * wander + rng.normal(0.0, 0.8, n)
    load = 30.0 + 25.0 * working + rng.normal(0.0, 1.5, n)
    vibration = 0.5 + 0.04 * load + rng.normal(0.0, 0.08, n)
    pressure = 3.0 + 0.2 * np.sin(pump_phase) + rng.normal(0.0, 0.02, n)
    values = np.stack([temperature, humidity, load, vibration, pressure], axis=1).astype(np.float32)
    times = [(START + int(s) * STEP).isoformat().replace("+00:00", "Z") for s in step]
    return SensorSeries(values, times, np.zeros(n, dtype=bool))


def with_anomalies(series: SensorSeries) -> SensorSeries:
    """`series` with four faults written in at fixed fractions of its length, labelled in `anomaly`: the
    temperature stuck at one value, a vibration spike, a slow pressure drift, the load and vibration of a
    stopped pump."""
    values, anomaly = series.values.copy(), series.anomaly.copy()
    n = len(values)
    col = {name: i for i, name in enumerate(CHANNELS)}

    def span(at: float, steps: int) -> slice:
        start = int(at * n)
        return slice(start, min(n, start + steps))

    stuck = span(0.15, 36)
    values[stuck, col["temperature"]] = values[stuck.start, col["temperature"]]
    spike = span(0.35, 3)
    values[spike, col["vibration"]] += 3.0
    drift = span(0.55, 48)
    values[drift, col["pressure"]] -= np.linspace(0.0, 0.6, drift.stop - drift.start, dtype=np.float32)
    stop = span(0.8, 24)
    values[stop, col["load"]] = 2.0
    values[stop, col["vibration"]] = 0.05
    for fault in (stuck, spike, drift, stop):
        anomaly[fault] = True
    return SensorSeries(values, series.times, anomaly)

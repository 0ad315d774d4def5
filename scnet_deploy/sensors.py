"""What a machine says about its own state while it works, read from sysfs: CPU frequency (cpufreq), temperatures
(thermal zones, hwmon), power (hwmon power sensors; Jetson's INA3221 as voltage x current) and energy (RAPL's
powercap counters). Each reader returns nothing where the files are absent (a VM, a container: this dev machine
exposes none of them). ``SCNET_DEPLOY_SYSFS`` names another root (tests use a fake tree)."""

import os
import re
from pathlib import Path

SYSFS_ENV = "SCNET_DEPLOY_SYSFS"
NONE_HERE = "no frequency, temperature or power readings on this machine"


def root() -> Path:
    return Path(os.environ.get(SYSFS_ENV) or "/sys")


def _number(path: Path) -> float | None:
    try:
        text = path.read_text()[:64].strip()
        return float(text) if re.fullmatch(r"-?\d+(\.\d+)?", text) else None
    except OSError:
        return None


def _label(path: Path, fallback: str) -> str:
    try:
        text = path.read_text()[:64].strip()
    except OSError:
        return fallback
    return re.sub(r"[^A-Za-z0-9_.:+-]", "_", text) or fallback


def cpu_mhz(base: Path) -> list[float]:
    """Each CPU's current frequency in MHz (cpufreq's scaling_cur_freq, kHz)."""
    found = []
    for path in sorted(base.glob("devices/system/cpu/cpu[0-9]*/cpufreq/scaling_cur_freq")):
        khz = _number(path)
        if khz is not None:
            found.append(khz / 1000)
    return found


def temperatures(base: Path) -> dict[str, float]:
    """Degrees Celsius by sensor: thermal zones (by type) and hwmon temp*_input (by chip name and label)."""
    found = {}
    for zone in sorted(base.glob("class/thermal/thermal_zone*")):
        value = _number(zone / "temp")
        if value is not None:
            found[f"{_label(zone / 'type', zone.name)}"] = value / 1000
    for chip in sorted(base.glob("class/hwmon/hwmon*")):
        name = _label(chip / "name", chip.name)
        for sensor in sorted(chip.glob("temp*_input")):
            value = _number(sensor)
            if value is not None:
                label = _label(sensor.with_name(sensor.name.replace("_input", "_label")), sensor.name[:-6])
                found[f"{name}:{label}"] = value / 1000
    return found


def power_watts(base: Path) -> dict[str, float]:
    """Watts by sensor: hwmon power*_input (microwatts), and INA3221-style rails (in*_input mV x curr*_input mA)."""
    found = {}
    for chip in sorted(base.glob("class/hwmon/hwmon*")):
        name = _label(chip / "name", chip.name)
        for sensor in sorted(chip.glob("power*_input")):
            value = _number(sensor)
            if value is not None:
                found[f"{name}:{sensor.name[:-6]}"] = value / 1e6
        for volts in sorted(chip.glob("in*_input")):
            amps = volts.with_name(volts.name.replace("in", "curr", 1))
            mv, ma = _number(volts), _number(amps)
            if mv is not None and ma is not None and amps.exists():
                label = _label(volts.with_name(volts.name.replace("_input", "_label")), volts.name[:-6])
                found[f"{name}:{label}"] = mv * ma / 1e6
    return found


def energy_counters(base: Path) -> dict[str, tuple[float, float | None]]:
    """RAPL domains' cumulative energy in joules and the counter's range (it wraps), by domain name."""
    found = {}
    for domain in sorted(base.glob("class/powercap/*rapl*")):
        value = _number(domain / "energy_uj")
        if value is not None:
            limit = _number(domain / "max_energy_range_uj")
            found[f"{_label(domain / 'name', domain.name)}:{domain.name}"] = (value / 1e6,
                                                                             None if limit is None else limit / 1e6)
    return found


def read() -> dict:
    """One reading of every sensor found under ``root()``."""
    base = root()
    mhz = cpu_mhz(base)
    return {"cpu_mhz": sum(mhz) / len(mhz) if mhz else None, "temperatures_c": temperatures(base),
            "power_w": power_watts(base), "energy_j": energy_counters(base)}


def any_found(reading: dict) -> bool:
    return bool(reading["cpu_mhz"] or reading["temperatures_c"] or reading["power_w"] or reading["energy_j"])


def energy_between(before: dict, after: dict, seconds: float) -> float | None:
    """Joules spent between two readings: RAPL's counters where there are (package domains summed, wraps undone),
    else the mean of the power sensors' readings times the time."""
    counters = [(name, value, limit) for name, (value, limit) in after["energy_j"].items()
                if name in before["energy_j"] and name.split(":")[0].startswith("package")]
    if counters:
        total = 0.0
        for name, value, limit in counters:
            delta = value - before["energy_j"][name][0]
            total += delta + limit if delta < 0 and limit else delta
        return total
    if after["power_w"]:
        # a board's input rail is its whole draw (Jetson's VDD_IN); the other rails are parts of it
        whole = [k for k in after["power_w"] if "VDD_IN" in k.upper()]
        keys = whole[:1] or list(after["power_w"])
        return sum((before["power_w"].get(k, after["power_w"][k]) + after["power_w"][k]) / 2 for k in keys) * seconds
    return None

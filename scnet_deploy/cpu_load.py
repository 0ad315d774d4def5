"""How busy the machine's CPUs were with other work while something was timed: the CPU time every process spent
(``/proc/stat``) minus this process's own (``/proc/self/stat``), over the wall time, in cores. A timing taken with
another process busy beside it is not this machine's speed; ``bench`` records the load of each timed run and flags
it (Linux; elsewhere nothing is recorded)."""

import os
import time

BUSY_CORES = 0.25  # other work using more than this many cores on average: the timing was taken under load


def _machine_busy_s() -> float | None:
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def _own_busy_s() -> float:
    times = os.times()
    return times.user + times.system


class OtherLoad:
    """``with OtherLoad() as load: ...`` then ``load.cores`` (None where it cannot be read) and ``load.record()``."""

    def __enter__(self) -> "OtherLoad":
        self.start, self.machine, self.own = time.perf_counter(), _machine_busy_s(), _own_busy_s()
        self.cores = None
        return self

    def __exit__(self, *exc) -> None:
        machine = _machine_busy_s()
        wall = time.perf_counter() - self.start
        if machine is not None and self.machine is not None and wall > 0:
            other = (machine - self.machine) - (_own_busy_s() - self.own)
            self.cores = max(other, 0.0) / wall

    def record(self) -> dict:
        flagged = self.cores is not None and self.cores > BUSY_CORES
        return {"other_cores": self.cores, "cpus": os.cpu_count(),
                "flag": (f"timed under load: other processes kept {self.cores:.2f} of {os.cpu_count()} CPUs busy"
                         if flagged else None)}

"""A verb on several devices: each one's work in its own thread (this machine mostly waits on ssh), ``--jobs`` at
a time; a device that fails is reported and the others go on."""

from concurrent.futures import ThreadPoolExecutor

from ..errors import ScnetDeployError
from ..options import RemoteOptions
from .ssh import Device, RemoteError, parse_device

LOCAL = "local"  # --on local: this machine, run by the verb itself


class FleetError(RemoteError):
    """Every device asked for failed: one line with each device's reason."""


def on_each(urls, run_one, remote: RemoteOptions) -> tuple[dict, dict]:
    """``run_one(device)`` on each device of ``urls`` (``local`` left out: the verb runs that itself), at most
    ``remote.jobs`` at a time: ({label: result}, {label: why it failed}) in the order asked. A device that fails
    does not stop the others; all of them failing is a ``FleetError`` (one line naming each)."""
    devices = [parse_device(url) for url in urls if url != LOCAL]  # a malformed URL stops everything, up front
    if remote.jobs < 1:
        raise ScnetDeployError(f"--jobs must be at least 1, got {remote.jobs}.")
    outcomes = {}

    def attempt(device: Device) -> None:
        try:
            outcomes[device.label] = (run_one(device), None)
        except ScnetDeployError as exc:
            outcomes[device.label] = (None, str(exc))

    if len(devices) == 1 or remote.jobs == 1:
        for device in devices:
            attempt(device)
    else:
        with ThreadPoolExecutor(min(remote.jobs, len(devices)), thread_name_prefix="device") as pool:
            list(pool.map(attempt, devices))
    results = {d.label: outcomes[d.label][0] for d in devices if outcomes[d.label][1] is None}
    failed = {d.label: outcomes[d.label][1] for d in devices if outcomes[d.label][1] is not None}
    if devices and not results and LOCAL not in urls:
        if len(failed) == 1:
            raise RemoteError(next(iter(failed.values())))
        raise FleetError(f"every device failed: {'; '.join(f'{label}: {why}' for label, why in failed.items())}")
    return results, failed


def labels_of(urls) -> list[str]:
    return [LOCAL if url == LOCAL else parse_device(url).label for url in urls]

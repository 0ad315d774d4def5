"""The openvino backend: build.py (export side) and runtime.py (what a device imports) apart."""

import sys

# No network from our verbs but the ssh a user asks for. OpenVINO sends a telemetry event when it is imported (and
# NNCF when it quantizes) through the openvino_telemetry package, and offers no environment switch (its documented
# opt-out, `opt_in_out --opt_out`, writes a consent file for every program of the user). Both fall back to their own
# no-op stub when that package cannot be imported, so in this process it cannot be. Every import of openvino
# in this project goes through this package (its runtime, its build, calibration called by its build).
sys.modules.setdefault("openvino_telemetry", None)

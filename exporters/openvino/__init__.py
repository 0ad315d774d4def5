"""The openvino backend: build.py (export side) and runtime.py (what a device imports) apart."""

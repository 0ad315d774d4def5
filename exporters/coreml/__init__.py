"""The coreml backend: build.py (export side) and runtime.py (what a device imports) apart."""

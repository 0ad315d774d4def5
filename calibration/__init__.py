"""INT8 calibration data and per-backend quantizers (installed as ``scnet_deploy.calibration``)."""

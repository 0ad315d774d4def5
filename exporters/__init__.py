"""Exporters: one module per target format, behind the registry (installed as ``scnet_deploy.exporters``)."""

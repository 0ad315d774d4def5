"""Image and array I/O, MATLAB-compatible resize, metrics, exact tiling, datasets, visuals."""

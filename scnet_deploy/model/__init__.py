"""SCNet: the network, its ArchSpec, checkpoint loading, the shift and its exact rewrites, forms, training of the reference weights. Importing the package needs no PyTorch."""

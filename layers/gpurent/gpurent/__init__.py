"""gpurent: the domain package shipped in the shared Lambda layer."""

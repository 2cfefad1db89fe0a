"""Records that travel between the layers: plain, immutable data, no I/O."""

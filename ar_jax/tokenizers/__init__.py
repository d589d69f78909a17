"""Image <-> token grids: pixels, VQ."""

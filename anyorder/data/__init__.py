"""Episodes on disk, the token layout, and the Lightning data module."""

"""Speed and memory ratios of flambe_compat against torch and flambe 0.4.18 (see README.md)."""

"""Runnable jobs behind `examples/` and the `diffusion-rl` command line."""

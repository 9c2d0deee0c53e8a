"""Ray Tune sweeps: the trials of a sweep and the driver that runs them (DESIGN §8)."""

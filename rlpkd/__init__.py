"""RL-PyramidKD: which FPN levels (P2-P5) are worth distilling, for which sample."""

__version__ = "0.1.0"

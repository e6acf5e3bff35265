"""Parallelism: the device mesh and logical-axis shardings (sharding.py), multi-host start-up
(distributed.py)."""

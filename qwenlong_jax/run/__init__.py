"""The training run: its spec, the phase loop, the SFT and RL steps, checkpoints and metrics."""

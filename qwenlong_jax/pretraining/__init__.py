"""Pretraining the tiny base checkpoint the embedded default starts from (docs/results.md, "The
tiny base checkpoint"): next-token training of a small Qwen2-shaped model from scratch on the
synthetic stream of data/pretrain.py, and the held-out lookup probe logged as it trains.

    info = loop.pretrain(settings.PretrainSettings(out="/tmp/s1", minutes=7, copy_fraction=1.0))

Modules: settings (one stage's settings), loop (the time- or step-boxed training loop, the
checkpoint it writes), probe (the teacher-forced lookup probe). Command line:
python -m qwenlong_jax.pretrain (qwenlong_jax/cli/pretrain.py). A package of its own: it trains
(optimizer, step function, schedule, checkpoints), which data/ (no jax) and models/ (the
architecture) do not.
"""

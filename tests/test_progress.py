"""The typed progress record reads and writes the checkpoint's meta dict unchanged: the keys
a checkpoint has always held, and a dict written before Progress existed restores to the same."""

import json

from qwenlong_jax.run.progress import Progress


def test_meta_round_trip_keeps_the_checkpoint_format():
    meta = {
        "phase_index": 1,
        "phase_step": 3,
        "step": 7,
        "phase_data": {"draws": 2, "iterator": {"k": 1}},
        "difficulty": {"history": {"a": [0.5]}},
        "evals": [{"step": 4, "phase": "sft", "heldout/acc@64": 0.25}],
    }
    meta = json.loads(json.dumps(meta))  # as orbax's JSON restore hands it back
    p = Progress.from_meta(meta)
    assert (p.phase_index, p.phase_step, p.step) == (1, 3, 7)
    assert p.to_meta() == meta and list(p.to_meta()) == list(meta)
    nxt = p.next_phase()
    assert (nxt.phase_index, nxt.phase_step, nxt.phase_data, nxt.step) == (2, 0, None, 7)
    assert p.phase_index == 1  # frozen: next_phase returns a new record

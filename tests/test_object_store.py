"""A full smoke run whose data, init_from (with its tokenizer) and workdir all live on an
object store, stopped and resumed once. The store is fsspec's in-memory filesystem
(`memory://`): like gs:// it has no append, no atomic rename and no local path, and it goes
through the same path layer (qwenlong_jax/paths/) as gs:// does with gcsfs installed. Also: bad rows
skipped and an over-long document dropped are counted in metrics.jsonl and summary.json, and
metrics.jsonl parses as strict JSON."""

import json
import os

import fsspec
import jax
import pytest

import configs.smoke
from qwenlong_jax import paths
from qwenlong_jax.config import from_config_dict
from qwenlong_jax.data.synthetic import make_dataset
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.run.metrics import read_metrics
from qwenlong_jax.run.trainer import Trainer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = os.path.join(REPO, "qwenlong_jax", "assets", "base")
STORE = "memory://bucket-i18"


def strict_loads(line: str):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(line, parse_constant=refuse)


@pytest.fixture(scope="module")
def store_run(tmp_path_factory, monkeypatch_module):
    fs = fsspec.filesystem("memory")
    if fs.exists("/bucket-i18"):
        fs.rm("/bucket-i18", recursive=True)
    monkeypatch_module.setenv("QWENLONG_CACHE", str(tmp_path_factory.mktemp("cache")))
    paths.upload(BASE, f"{STORE}/base")  # init_from, with tokenizer/spm.model inside
    tok = load_tokenizer(os.path.join(BASE, "tokenizer"))
    short = make_dataset(3, 8, [60, 90], tok.count)
    long = make_dataset(4, 8, [170, 200], tok.count)
    huge = make_dataset(5, 1, 2000, tok.count)  # longer than every phase: dropped, counted
    for r in long:
        r["id"] = "L" + r["id"]
    huge[0]["id"] = "huge"
    lines = [json.dumps(r) for r in short] + ["{not json", json.dumps({"id": "x", "document": "d", "question": "q"})]
    paths.write_text(f"{STORE}/data/part-0.jsonl", "\n".join(lines) + "\n")
    paths.write_text(f"{STORE}/data/part-1.jsonl", "\n".join(json.dumps(r) for r in long + huge) + "\n")
    c = configs.smoke.get_config()
    c.model.init_from = f"{STORE}/base"
    c.data.update(train_files=(f"{STORE}/data/*.jsonl",), bad_records="skip")
    cfg = from_config_dict(c)
    workdir = f"{STORE}/runs/smoke"
    first = Trainer(cfg, workdir, quiet=True, devices=jax.devices()[:1], stop_after_steps=3).run()
    assert first == {"stopped": True, "step": 3}
    summary = Trainer(cfg, workdir, quiet=True, devices=jax.devices()[:1]).run()
    return workdir, summary


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_resumed_run_on_the_store_has_every_step_once(store_run):
    workdir, summary = store_run
    assert summary["steps"] == 6
    text = paths.read_text(paths.join(workdir, "metrics.jsonl"))
    rows = [strict_loads(ln) for ln in text.splitlines() if ln.strip()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert rows == read_metrics(workdir)
    steps = sorted(int(n) for n in paths.listdir(paths.join(workdir, "checkpoints")) if n.isdigit())
    assert steps[-1] == 6 and len(steps) <= 3  # keep_checkpoints pruned on the store too
    assert not paths.exists(paths.join(workdir, "run.lock"))  # released


def test_skips_and_drops_are_counted(store_run, capsys):
    from qwenlong_jax.cli.train import print_summary

    workdir, summary = store_run
    print_summary(summary)  # what train prints at the end of the run
    assert "dropped/too_long=1, skipped/malformed_json=1, skipped/missing_field=1" in capsys.readouterr().out
    want = {"skipped/malformed_json": 1, "skipped/missing_field": 1, "dropped/too_long": 1}
    assert summary["data"] == want
    assert json.loads(paths.read_text(paths.join(workdir, "summary.json")))["data"] == want
    for r in read_metrics(workdir):
        assert {f"data/{k}": float(v) for k, v in want.items()}.items() <= r.items()


def test_export_tensorboard_and_plots_on_the_store(store_run):
    workdir, _ = store_run
    export = paths.join(workdir, "hf")
    for name in (
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "tokenizer/spm.model",
    ):
        assert paths.exists(paths.join(export, name)), name
    assert any(n.startswith("events.out.tfevents") for n in paths.listdir(paths.join(workdir, "tb")))
    for name in ("reward.png", "summary.json"):
        assert paths.exists(paths.join(workdir, name))

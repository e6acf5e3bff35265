"""grain pipelines (resume, epochs, sharding) and the array_record / tensorflow-datasets inputs."""

import json

import grain
import pytest

from qwenlong_jax.data import synthetic
from qwenlong_jax.data.pipeline import make_dataset, make_iterator, process_shard, shard_bounds
from qwenlong_jax.data.schema import DataError
from qwenlong_jax.data.tfds_source import array_record_dataset, array_record_records, tfds_records, write_array_record

Shard = grain.sharding.ShardOptions


def test_resumed_iterator_continues_exactly_and_epochs_are_permutations():
    items = list(range(23))
    full = list(make_iterator(items, seed=7, num_epochs=3))
    assert len(full) == 69
    for e in range(3):  # each example exactly once per epoch
        assert sorted(full[23 * e : 23 * (e + 1)]) == items
    assert full[:23] != full[23:46] and full[:23] != items  # shuffled, reseeded per epoch
    it = make_iterator(items, seed=7, num_epochs=3)
    head = [next(it) for _ in range(30)]  # stop mid second epoch
    state = json.loads(json.dumps(it.get_state()))  # the state survives serialisation
    resumed = make_iterator(items, seed=7, num_epochs=3)
    resumed.set_state(state)
    assert head + list(resumed) == full
    assert list(make_iterator(items, seed=8, num_epochs=1)) != full[:23]


def test_batches_and_resume_with_map():
    items = [{"i": i} for i in range(10)]
    it = make_iterator(items, seed=0, num_epochs=None, batch_size=4, map_fn=lambda r: r["i"])
    first = [next(it) for _ in range(3)]
    assert all(len(b) == 4 for b in first)
    state = it.get_state()
    nxt = next(it)
    it2 = make_iterator(items, seed=0, num_epochs=None, batch_size=4, map_fn=lambda r: r["i"])
    it2.set_state(state)
    assert next(it2) == nxt
    one_epoch = list(make_iterator(items, seed=0, num_epochs=1, batch_size=4))
    assert len(one_epoch) == 2  # the partial batch is dropped: fixed batch shapes


@pytest.mark.parametrize("n,count,drop", [(24, 4, True), (26, 4, True), (26, 4, False)])
def test_process_shards_partition_each_epoch(n, count, drop):
    from grain._src.core.sharding import even_split  # grain's own rule, for parity

    items = list(range(n))
    per_shard = []
    for i in range(count):
        shard = Shard(i, count, drop_remainder=drop)
        assert shard_bounds(n, shard) == even_split(n, shard)
        per_shard.append(list(make_iterator(items, seed=1, num_epochs=2, shard=shard)))
    for e in range(2):
        seen = []
        for out in per_shard:
            size = len(out) // 2
            seen += out[e * size : (e + 1) * size]
        expected = items[: n - n % count] if drop else items
        assert sorted(seen) == expected  # disjoint shards covering the data, once per epoch
    if drop:
        assert len({len(out) for out in per_shard}) == 1  # processes step in lockstep


def test_process_shard_is_single_process_here():
    shard = process_shard()
    assert (shard.shard_index, shard.shard_count) == (0, 1)


def test_bad_pipeline_arguments():
    with pytest.raises(ValueError, match="no items"):
        make_dataset([], seed=0)
    with pytest.raises(ValueError, match="num_epochs"):
        make_dataset([1], seed=0, num_epochs=0)
    with pytest.raises(ValueError, match="is empty"):
        make_dataset([1, 2], seed=0, shard=Shard(2, 3, drop_remainder=True))


def _rows(n):
    words = lambda s: len(s.split())  # noqa: E731
    return synthetic.make_dataset(0, n, 40, words)


def test_array_record_round_trip_and_lazy_dataset(tmp_path):
    rows = _rows(6)
    path = str(tmp_path / "train.array_record")
    assert write_array_record(path, rows) == 6
    recs, rep = array_record_records(path)
    assert rep.kept == 6 and [r.id for r in recs] == [r["id"] for r in rows]
    assert [r.document for r in recs] == [r["document"] for r in rows]
    assert recs[3].source == f"{path}:3"
    lazy = array_record_dataset(path)
    assert len(lazy) == 6 and lazy[2] == recs[2]
    it = make_iterator(lazy, seed=3, num_epochs=1)  # grain pipeline over the lazy source
    assert sorted(r.id for r in it) == sorted(r["id"] for r in rows)


def test_array_record_bad_rows(tmp_path):
    from array_record.python.array_record_module import ArrayRecordWriter

    path = str(tmp_path / "bad.array_record")
    w = ArrayRecordWriter(path, "group_size:1")
    w.write(json.dumps(_rows(1)[0]).encode())
    w.write(b'{"id": "x", "document": "\xff", "question": "q", "answer": "a"}')
    w.write(b'{"id": "y", "document": "d"')
    w.close()
    with pytest.raises(DataError, match=rf"{path}:1: field '<bytes>': not UTF-8"):
        array_record_records(path)
    recs, rep = array_record_records(path, on_bad="skip")
    assert len(recs) == 1 and dict(rep.skipped) == {"non_utf8": 1, "malformed_json": 1}
    with pytest.raises(DataError, match=rf"{path}:2: field '<json>'"):
        array_record_dataset(path)[2]


def test_tensorflow_datasets_source(tmp_path):
    """A tiny TFDS dataset prepared in array_record format (no TensorFlow) and read back."""
    import tensorflow_datasets as tfds

    rows = _rows(4)

    class TinySynQa(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            text = tfds.features.Text()
            return tfds.core.DatasetInfo(
                builder=self,
                features=tfds.features.FeaturesDict(
                    {k: text for k in ("id", "data_source", "document", "question", "answer")}
                ),
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for r in rows:
                yield r["id"], {k: r[k] for k in ("id", "data_source", "document", "question", "answer")}

    TinySynQa(data_dir=str(tmp_path), file_format="array_record").download_and_prepare()
    recs, rep = tfds_records("tiny_syn_qa", "train", data_dir=str(tmp_path))
    assert rep.kept == 4
    by_id = {r.id: r for r in recs}
    for r in rows:
        assert (by_id[r["id"]].document, by_id[r["id"]].answer, by_id[r["id"]].data_source) == (
            r["document"],
            r["answer"],
            r["data_source"],
        )
    assert all(r.source.startswith("tfds:tiny_syn_qa/train:") for r in recs)

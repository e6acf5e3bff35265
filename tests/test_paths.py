"""The path layer (qwenlong_jax/paths/): local paths and object-store URLs behave alike; gs:// is served
here by an in-memory fsspec filesystem registered under the "gs" protocol (the real one is
gcsfs), so URL handling, globs, whole-file writes and local copies are what a bucket gets."""

import importlib.util
import json
import pathlib

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from qwenlong_jax import paths
from qwenlong_jax.data.readers import load_records


class FakeGCS(MemoryFileSystem):
    protocol = ("gs", "gcs")
    store: dict = {}
    pseudo_dirs = [""]


@pytest.fixture
def fake_gcs(monkeypatch, tmp_path):
    from fsspec.registry import _registry

    monkeypatch.setenv("QWENLONG_CACHE", str(tmp_path / "cache"))
    saved = dict(_registry)
    fsspec.register_implementation("gs", FakeGCS, clobber=True)
    FakeGCS.store.clear()
    FakeGCS.clear_instance_cache()
    yield
    _registry.clear()
    _registry.update(saved)
    FakeGCS.clear_instance_cache()


ROW = {"id": "1", "document": "the code of KIRA is 4 .", "question": "What is the code of KIRA ?", "answer": "4"}


def test_local_expand_and_errors(tmp_path):
    for name in ("b.jsonl", "a.jsonl"):
        (tmp_path / name).write_text(json.dumps(ROW) + "\n")
    (tmp_path / "sub").mkdir()
    assert paths.expand(str(tmp_path / "*.jsonl")) == [str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")]
    for bad, msg in (
        (tmp_path / "nope.jsonl", "does not exist"),
        (tmp_path / "sub", "is a directory"),
        (tmp_path / "*.parquet", "matches no file"),
    ):
        with pytest.raises(paths.PathError, match=msg):
            paths.expand(str(bad))


def test_gs_urls_read_write_glob_and_copy(fake_gcs, tmp_path):
    paths.write_text("gs://bucket/data/part-1.jsonl", json.dumps({**ROW, "id": "2"}) + "\n")
    paths.write_text("gs://bucket/data/part-0.jsonl", json.dumps(ROW) + "\n")
    paths.write_text("gs://bucket/model/tokenizer/spm.model", "x")
    assert paths.is_remote("gs://bucket/x") and paths.scheme("gs://bucket/x") == "gs"
    files = paths.expand("gs://bucket/data/*.jsonl")
    assert files == ["gs://bucket/data/part-0.jsonl", "gs://bucket/data/part-1.jsonl"]
    recs, report = load_records(files)
    assert [r.id for r in recs] == ["1", "2"] and recs[0].source == "gs://bucket/data/part-0.jsonl:1"
    with pytest.raises(paths.PathError, match="is a directory"):
        paths.expand("gs://bucket/data")
    local = paths.local_copy("gs://bucket/model")
    assert pathlib.Path(local, "tokenizer", "spm.model").read_text() == "x"
    assert paths.local_copy("gs://bucket/model") == local  # cached
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "a.txt").write_text("a")
    paths.upload(str(tmp_path / "out"), "gs://bucket/run/hf")
    assert paths.listdir("gs://bucket/run/hf") == ["a.txt"] and paths.read_text("gs://bucket/run/hf/a.txt") == "a"
    paths.remove("gs://bucket/run", recursive=True)
    assert not paths.exists("gs://bucket/run/hf/a.txt")


@pytest.mark.skipif(importlib.util.find_spec("gcsfs") is not None, reason="gcsfs installed: gs:// is real")
def test_gs_without_gcsfs_is_one_line():
    with pytest.raises(paths.PathError, match="gcsfs"):
        paths.expand("gs://bucket/data.jsonl")

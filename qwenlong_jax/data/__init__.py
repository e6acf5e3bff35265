"""Data: tokenizer, prompt template, records and readers, truncation, synthetic tasks, pipelines.

    from qwenlong_jax.data import load_tokenizer, load_records, build_prompt, fit_prompt
    tok = load_tokenizer(path_or_None)                 # HF dir, sentencepiece model, or embedded
    records, report = load_records(paths, tokenizer=tok, max_prompt_tokens=L, on_bad="error")
    ids = tok.chat_prompt(record.prompt)              # or fit_prompt(record, tok, L) to truncate
    from qwenlong_jax.data.pipeline import make_iterator    # grain (imports jax)
    python -m qwenlong_jax.data.make_synthetic --out DIR --num N --doc_tokens 64,256 --seed 0
    python -m qwenlong_jax.data.train_tokenizer --out qwenlong_jax/assets/tokenizer

Modules: tokenizer, prompt, schema, rows, readers, truncation, synthetic (+ synthetic_vocab), pretrain,
make_synthetic,
run_data (the run's records split into phases; imports the config),
pipeline, tfds_source. This package imports neither jax nor grain; pipeline.py does.
"""

from qwenlong_jax.data.prompt import PROMPT_TEMPLATE, build_prompt, split_prompt  # noqa: F401
from qwenlong_jax.data.readers import load_records, validate_rows, write_jsonl  # noqa: F401
from qwenlong_jax.data.rows import parse_row  # noqa: F401
from qwenlong_jax.data.schema import DataError, LoadReport, Record  # noqa: F401
from qwenlong_jax.data.tokenizer import DEFAULT_TOKENIZER, Tokenizer, load_tokenizer  # noqa: F401
from qwenlong_jax.data.truncation import fit_prompt, truncate_middle  # noqa: F401

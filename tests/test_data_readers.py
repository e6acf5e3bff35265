"""Readers, validation with file:line:field errors, the skip policy, prompt and truncation."""

import json
import os
import pathlib

import pytest

from qwenlong_jax.data import rows as rows_lib
from qwenlong_jax.data.prompt import PROMPT_TEMPLATE, build_prompt, split_prompt
from qwenlong_jax.data.readers import load_records
from qwenlong_jax.data.schema import DataError, Record
from qwenlong_jax.data.tokenizer import load_tokenizer
from qwenlong_jax.data.truncation import fit_prompt, truncate_middle

FIX = os.path.join(os.path.dirname(__file__), "fixtures", "data")


def fx(name):
    return os.path.join(FIX, name)


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer()  # the embedded sentencepiece model


# ------------------------------------------------------------------------------------ prompt


def test_prompt_is_the_paper_template_verbatim():
    expected = (
        "Please read the following text and answer the question below.\n\n<text>\nDOC\n"
        '</text>\n\nQ?\n\nFormat your response as follows: "Therefore, the answer is '
        '(insert answer here)".'
    )
    assert build_prompt("DOC", "Q?") == expected
    assert PROMPT_TEMPLATE.format(document="DOC", question="Q?") == expected


def test_split_prompt_inverts_build_prompt_even_with_tags_in_document():
    doc = "a\n</text>\n\nnot the question\nb"
    assert split_prompt(build_prompt(doc, "Which?\n(A) x")) == (doc, "Which?\n(A) x")
    assert split_prompt("some other prompt") is None


# ----------------------------------------------------------------------------------- readers


def test_verl_jsonl_rows():
    recs, rep = load_records(fx("verl_good.jsonl"))
    assert rep.read == rep.kept == 3 and not rep.skipped
    dm, mu, mc = recs
    assert (dm.id, dm.data_source, dm.ground_truth, dm.answer) == (
        "dm-0",
        "docmath",
        "Therefore, the answer is 30",
        "30",
    )
    assert dm.document.startswith("The company reported") and dm.question.startswith("By how many")
    assert dm.prompt == build_prompt(dm.document, dm.question)
    assert dm.extra_info == {"index": "dm-0", "split": "train"} and dm.source.endswith("verl_good.jsonl:1")
    assert mu.answer == "Paris"
    assert (mc.ground_truth, mc.answer) == ("The correct answer is (B)", "B")


def test_verl_parquet_matches_jsonl(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in pathlib.Path(fx("verl_good.jsonl")).read_text().splitlines()]
    path = str(tmp_path / "train.parquet")
    pq.write_table(pa.Table.from_pylist(rows), path)
    from_pq, _ = load_records(path)
    from_js, _ = load_records(fx("verl_good.jsonl"))
    assert [r.id for r in from_pq] == ["dm-0", "mu-1", "mc-2"]
    for a, b in zip(from_pq, from_js):
        assert (a.prompt, a.ground_truth, a.data_source, a.document) == (
            b.prompt,
            b.ground_truth,
            b.data_source,
            b.document,
        )
    assert from_pq[1].source == f"{path}:2"


def test_plain_jsonl_rows(tok):
    recs, rep = load_records(fx("plain_good.jsonl"), tokenizer=tok)
    assert rep.read == 4 and rep.kept == 4  # the blank last line is not a row
    p0, p1, p2, p3 = recs
    assert p0.prompt == build_prompt(p0.document, p0.question) and p0.ground_truth == "Warsaw"
    assert (p1.id, p1.answer, p1.ground_truth) == ("1", "150", "150")  # numbers become text
    assert (p2.answer, p2.ground_truth) == ("C", "The correct answer is (C)")
    assert p3.data_source == rows_lib.DEFAULT_DATA_SOURCE and p3.response.startswith("<think>")
    assert p0.num_prompt_tokens == len(tok.chat_prompt(p0.prompt))


@pytest.mark.parametrize(
    "name,line,field,reason",
    [
        ("bad_malformed_json.jsonl", 2, "<json>", "malformed_json"),
        ("bad_missing_field.jsonl", 2, "question", "missing_field"),
        ("bad_wrong_type.jsonl", 2, "document", "wrong_type"),
        ("bad_empty_document.jsonl", 2, "document", "empty"),
        ("bad_non_utf8.jsonl", 2, "<bytes>", "non_utf8"),
        ("bad_mc_ground_truth.jsonl", 2, "reward_model.ground_truth", "bad_ground_truth"),
        ("bad_verl_missing_ground_truth.jsonl", 1, "reward_model.ground_truth", "missing_field"),
        ("bad_verl_system_prompt.jsonl", 1, "prompt", "wrong_type"),
    ],
)
def test_bad_file_raises_one_line_naming_file_line_field(name, line, field, reason):
    with pytest.raises(DataError) as ei:
        load_records(fx(name))
    msg = str(ei.value)
    assert msg.startswith(f"{fx(name)}:{line}: field '{field}': ") and "\n" not in msg
    assert ei.value.reason == reason


def test_error_messages_say_what_is_wrong():
    def msg(name):
        with pytest.raises(DataError) as ei:
            load_records(fx(name))
        return str(ei.value)

    assert "expected str, got list" in msg("bad_wrong_type.jsonl")
    bad_line = pathlib.Path(fx("bad_non_utf8.jsonl")).read_bytes().split(b"\n")[1]
    pos = bad_line.index(bytes([0xE9]))  # the byte after "caf"
    assert f"not UTF-8 at byte {pos}: " + r"b'\xe9 au'" in msg("bad_non_utf8.jsonl")
    assert "The correct answer is" in msg("bad_mc_ground_truth.jsonl")
    assert "got roles ['system', 'user']" in msg("bad_verl_system_prompt.jsonl")


def test_over_long_document_is_rejected_in_tokens(tok):
    recs, _ = load_records(fx("plain_good.jsonl"), tokenizer=tok)
    limit = min(r.num_prompt_tokens for r in recs)  # the shortest one passes exactly
    with pytest.raises(
        DataError,
        match=r"plain_good\.jsonl:1: field 'document': prompt has \d+ "
        rf"tokens, over the limit of {limit}",
    ):
        load_records(fx("plain_good.jsonl"), tokenizer=tok, max_prompt_tokens=limit)
    kept, rep = load_records(fx("plain_good.jsonl"), tokenizer=tok, max_prompt_tokens=limit, on_bad="skip")
    assert [r.num_prompt_tokens for r in kept] == [limit] and rep.skipped == {"too_long": 3}
    with pytest.raises(DataError, match=r"verl_good\.jsonl:1: field 'prompt': prompt has"):
        load_records(fx("verl_good.jsonl"), tokenizer=tok, max_prompt_tokens=10)


def test_skip_policy_counts_each_reason():
    recs, rep = load_records(fx("mixed_bad.jsonl"), on_bad="skip")
    assert [r.id for r in recs] == ["p0", "p3"]
    assert rep.read == 10 and rep.kept == 2
    assert dict(rep.skipped) == {
        "malformed_json": 1,
        "missing_field": 1,
        "wrong_type": 1,
        "empty": 1,
        "non_utf8": 1,
        "bad_ground_truth": 1,
        "duplicate_id": 1,
        "not_an_object": 1,
    }
    assert "skipped 8" in rep.summary() and "non_utf8=1" in rep.summary()
    assert rep.first_error["duplicate_id"].endswith("id 'p0' already at " + fx("mixed_bad.jsonl") + ":1")
    with pytest.raises(DataError, match=r"mixed_bad\.jsonl:3: field '<json>'"):
        load_records(fx("mixed_bad.jsonl"))  # default policy: the first bad row stops the load


def test_bad_arguments():
    with pytest.raises(ValueError, match="on_bad must be"):
        load_records(fx("plain_good.jsonl"), on_bad="ignore")
    with pytest.raises(ValueError, match="does not exist"):
        load_records(fx("nope.jsonl"))
    with pytest.raises(ValueError, match="needs a tokenizer"):
        load_records(fx("plain_good.jsonl"), max_prompt_tokens=5)


def test_record_json_round_trip():
    recs, _ = load_records(fx("verl_good.jsonl"))
    for r in recs:
        back = Record.from_json(r.to_json())
        assert back == r and back.extra_info == r.extra_info


# -------------------------------------------------------------------------------- truncation


def test_truncate_middle_keeps_first_and_last_halves():
    assert truncate_middle(range(10), 4) == [0, 1, 8, 9]
    assert truncate_middle(range(10), 5) == [0, 1, 7, 8, 9]
    assert truncate_middle(range(3), 5) == [0, 1, 2]
    assert truncate_middle(range(3), 0) == []
    with pytest.raises(ValueError):
        truncate_middle([1], -1)


def test_fit_prompt_truncates_the_document_only(tok):
    doc = " ".join(f"w{i:03d}" for i in range(400))  # fixed width: token middle = word middle
    rec = Record(
        id="x",
        data_source="docqa",
        prompt=build_prompt(doc, "What is w0 ?"),
        ground_truth="w0",
        answer="w0",
        document=doc,
        question="What is w0 ?",
    )
    full = tok.chat_prompt(rec.prompt)
    assert fit_prompt(rec, tok, len(full)) == full  # fits: untouched
    ids = fit_prompt(rec, tok, len(full) - 300)
    assert len(full) - 310 <= len(ids) <= len(full) - 300
    text = tok.decode(ids)
    assert "w000 w001 w002" in text and "w398 w399\n</text>" in text and " w200 " not in text
    assert " w150 " in text and " w250 " in text
    assert text.rstrip().endswith('"Therefore, the answer is (insert answer here)".<|im_end|>\n<|im_start|>assistant')
    with pytest.raises(ValueError, match="without its document"):
        fit_prompt(rec, tok, 20)


@pytest.mark.parametrize(
    "gt,letter",
    [
        ("The correct answer is (B)", "B"),
        ("The correct answer is C", "C"),
        ("The correct answer is (B", None),
        ("the correct answer is (B)", None),
        ("(B)", None),
    ],
)
def test_multiple_choice_ground_truth_accepted_iff_the_scorer_parses_it(gt, letter):
    row = {
        "data_source": "long_toc_choices_x",
        "prompt": [{"role": "user", "content": "q"}],
        "reward_model": {"ground_truth": gt},
    }
    if letter is None:
        with pytest.raises(DataError, match="f.jsonl:3: field 'reward_model.ground_truth'"):
            rows_lib.parse_row(row, "f.jsonl:3")
    else:
        assert rows_lib.parse_row(row, "f.jsonl:3").answer == letter


@pytest.mark.parametrize(
    "answer,letter",
    [("B", "B"), ("(C)", "C"), ("D.", "D"), ("The correct answer is (A)", "A"), ("E", None), ("b", None)],
)
def test_plain_multiple_choice_answers(answer, letter):
    row = {"id": "i", "document": "d", "question": "q", "answer": answer, "data_source": "synthetic_long_toc_choices"}
    if letter is None:
        with pytest.raises(DataError, match="field 'answer': multiple-choice answer"):
            rows_lib.parse_row(row, "f.jsonl:1")
    else:
        rec = rows_lib.parse_row(row, "f.jsonl:1")
        assert (rec.answer, rec.ground_truth) == (letter, f"The correct answer is ({letter})")


def test_fit_prompt_without_template_truncates_the_whole_user_text(tok):
    text = " ".join(f"w{i:03d}" for i in range(300))  # fixed width: token middle = word middle
    rec = Record(id="y", data_source="docqa", prompt=text, ground_truth="a", answer="a")
    full = tok.chat_prompt(text)
    ids = fit_prompt(rec, tok, len(full) - 100)
    assert len(full) - 110 <= len(ids) <= len(full) - 100
    out = tok.decode(ids)
    assert out.startswith("<|im_start|>user\nw000 w001") and "w299<|im_end|>" in out
    assert " w150 " not in out and " w130 " in out and " w170 " in out

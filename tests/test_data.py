"""Tests for primejax.data.prompts: loading Eurus-schema files, the overlong filter, the prompt order."""

import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from primejax.data import DataError, PromptDataset, PromptIterator, PromptRecord, load_prompt_records
from primejax.tokenizer import build_demo_tokenizer, demo_corpus

APPS_TESTS = json.dumps({"inputs": ["1 2\n"], "outputs": ["3\n"]})
ROWS = [
    {
        "data_source": "numina_olympiads",
        "prompt": [{"role": "system", "content": "Think step by step."}, {"role": "user", "content": "Compute 2 + 3."}],
        "ability": "math",
        "reward_model": {"ground_truth": "5", "style": "rule"},
        "extra_info": {"index": 0, "split": "train"},
    },
    {
        "data_source": "apps",
        "prompt": [{"role": "user", "content": "Read a and b, print a + b."}],
        "ability": "code",
        "reward_model": {"ground_truth": APPS_TESTS, "style": "rule"},
        "extra_info": {"index": 1, "split": "train"},
    },
]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


@pytest.fixture(scope="module")
def tokenizer():
    return build_demo_tokenizer(demo_corpus(), vocab_size=300)


def test_jsonl_rows_become_records(tmp_path):
    path = write_jsonl(tmp_path / "train.jsonl", ROWS)
    records = load_prompt_records(str(path))
    assert records[0] == PromptRecord(
        data_source="numina_olympiads",
        messages=({"role": "system", "content": "Think step by step."}, {"role": "user", "content": "Compute 2 + 3."}),
        ability="math",
        ground_truth="5",
        index=0,
        source=str(path),
        extra_info={"index": 0, "split": "train"},
    )
    assert records[1].ground_truth == APPS_TESTS
    assert records[1].ability == "code"


def test_blank_lines_are_skipped_and_files_concatenate_in_order(tmp_path):
    first = tmp_path / "a.jsonl"
    first.write_text("\n" + json.dumps(ROWS[1]) + "\n\n" + json.dumps(ROWS[0]) + "\n")
    second = write_jsonl(tmp_path / "b.json", ROWS[:1])
    records = load_prompt_records([first, second])
    assert [(r.data_source, r.index, r.source) for r in records] == [
        ("apps", 0, str(first)),
        ("numina_olympiads", 1, str(first)),
        ("numina_olympiads", 0, str(second)),
    ]


def test_string_prompt_and_non_string_ground_truths(tmp_path):
    rows = [
        {"data_source": "d", "prompt": "What is 6 * 7?", "ability": "math", "reward_model": {"ground_truth": 42}},
        {"data_source": "d", "prompt": "Roots?", "ability": "math", "reward_model": {"ground_truth": [1, 2]}},
        {"data_source": "d", "prompt": "Half?", "ability": "math", "reward_model": {"ground_truth": 0.5}},
    ]
    records = load_prompt_records(write_jsonl(tmp_path / "p.jsonl", rows))
    assert records[0].messages == ({"role": "user", "content": "What is 6 * 7?"},)
    assert [r.ground_truth for r in records] == ["42", "[1, 2]", "0.5"]
    assert records[0].extra_info == {}


def test_parquet_with_nested_structs(tmp_path):
    path = tmp_path / "train.parquet"
    message = pa.struct([("role", pa.string()), ("content", pa.string())])
    table = pa.table(
        {
            "data_source": pa.array([r["data_source"] for r in ROWS]),
            "prompt": pa.array([r["prompt"] for r in ROWS], type=pa.list_(message)),
            "ability": pa.array([r["ability"] for r in ROWS]),
            "reward_model": pa.array(
                [r["reward_model"] for r in ROWS], type=pa.struct([("ground_truth", pa.string()), ("style", pa.string())])
            ),
            "extra_info": pa.array(
                [r["extra_info"] for r in ROWS], type=pa.struct([("index", pa.int64()), ("split", pa.string())])
            ),
        }
    )
    pq.write_table(table, path)
    from_parquet = load_prompt_records(path)
    from_jsonl = load_prompt_records(write_jsonl(tmp_path / "train.jsonl", ROWS))
    strip = [dict(r.__dict__, source=None) for r in from_parquet]
    assert strip == [dict(r.__dict__, source=None) for r in from_jsonl]
    assert from_parquet[1].ground_truth == APPS_TESTS


def test_parquet_bad_row_names_the_row(tmp_path):
    path = tmp_path / "bad.parquet"
    rows = [dict(ROWS[0]), dict(ROWS[0], ability=None)]
    pq.write_table(pa.Table.from_pylist(rows), path)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} row 1: field 'ability' is null$"):
        load_prompt_records(path)


def test_missing_file_and_unknown_extension_are_named(tmp_path):
    missing = tmp_path / "nope.jsonl"
    with pytest.raises(DataError, match=rf"{re.escape(str(missing))}: prompt file not found"):
        load_prompt_records(missing)
    csv = tmp_path / "train.csv"
    csv.write_text("a,b\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(csv))}: unsupported file extension '\.csv'"):
        load_prompt_records(csv)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda row: row["reward_model"].pop("ground_truth"), "field 'reward_model.ground_truth' is missing"),
        (lambda row: row.pop("data_source"), "field 'data_source' is missing"),
        (lambda row: row.update(ability=3), "field 'ability' must be a string, got 3"),
        (lambda row: row.update(prompt=[]), "field 'prompt' is an empty list"),
        (lambda row: row.update(prompt=[{"role": "user", "content": 7}]),
         r"field 'prompt\[0\].content' must be a string, got 7"),
        (lambda row: row["reward_model"].update(ground_truth=True),
         "field 'reward_model.ground_truth' must be a string, number or list, got True"),
        (lambda row: row.update(reward_model="5"), "field 'reward_model' must be an object, got '5'"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path, change, message):
    bad = json.loads(json.dumps(ROWS[0]))
    change(bad)
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n\n" + json.dumps(bad) + "\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} line 3: {message}$"):
        load_prompt_records(path)


def test_invalid_json_names_the_line(tmp_path):
    path = tmp_path / "train.jsonl"
    path.write_text(json.dumps(ROWS[0]) + "\n{not json\n")
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))} line 2: invalid JSON"):
        load_prompt_records(path)


def test_dataset_templates_once_and_drops_overlong_prompts(tokenizer, tmp_path):
    short = dict(ROWS[1], prompt="Compute 1 + 2.")
    long = dict(ROWS[1], prompt="Compute " + " + ".join(["123"] * 40) + ".")
    records = load_prompt_records(write_jsonl(tmp_path / "p.jsonl", [long, short, long]))
    limit = len(tokenizer.apply_chat_template([{"role": "user", "content": "Compute 1 + 2."}])) + 4
    dataset = PromptDataset(records, tokenizer, limit)
    assert len(dataset) == 1
    assert dataset.dropped_overlong == 2
    assert dataset.record(0).index == 1
    assert dataset.tokens(0) == tokenizer.apply_chat_template([{"role": "user", "content": "Compute 1 + 2."}])
    with pytest.raises(DataError, match=rf"all 2 prompts are longer than max_prompt_length={limit} tokens "
                                        rf"\(the longest has {dataset.longest}\)"):
        PromptDataset([records[0], records[2]], tokenizer, limit)


def test_processes_template_their_share_and_agree_on_the_kept_prompts(tokenizer, tmp_path):
    short = dict(ROWS[1], prompt="Compute 1 + 2.")
    long = dict(ROWS[1], prompt="Compute " + " + ".join(["123"] * 40) + ".")
    records = load_prompt_records(write_jsonl(tmp_path / "p.jsonl", [long, short, short, long, short]))
    limit = len(tokenizer.apply_chat_template([{"role": "user", "content": "Compute 1 + 2."}])) + 4
    whole = PromptDataset(records, tokenizer, limit)
    lengths = np.asarray([len(tokenizer.apply_chat_template(list(r.messages), add_generation_prompt=True))
                          for r in records])
    shares = [range(0, 3), range(3, 5)]
    templated = []

    def gather(local, count):  # what every process contributes for its share
        assert count == 5
        templated.append(len(local))
        return lengths

    for share in shares:
        part = PromptDataset(records, tokenizer, limit, share=lambda count, share=share: share, gather=gather)
        assert len(part) == len(whole) == 3 and part.dropped_overlong == whole.dropped_overlong == 2
        assert [part.record(i).index for i in range(3)] == [whole.record(i).index for i in range(3)]
        assert [part.tokens(i) for i in range(3)] == [whole.tokens(i) for i in range(3)]
    assert templated == [3, 2]


def test_system_prompt_and_instruction_suffix(tokenizer, tmp_path):
    records = load_prompt_records(write_jsonl(tmp_path / "p.jsonl", ROWS))
    dataset = PromptDataset(records, tokenizer, 10_000, system_prompt="Be brief.", instruction_suffix=" Box it.")
    assert dataset.messages(0) == [
        {"role": "system", "content": "Think step by step."},
        {"role": "user", "content": "Compute 2 + 3. Box it."},
    ]
    expected = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Read a and b, print a + b. Box it."}]
    assert dataset.messages(1) == expected
    assert dataset.tokens(1) == tokenizer.apply_chat_template(expected)
    assert records[1].messages == ({"role": "user", "content": "Read a and b, print a + b."},)


def test_iterator_orders_are_seeded_permutations():
    a, b = PromptIterator(10, seed=3), PromptIterator(10, seed=3)
    assert a.take(25) == b.take(25)
    first = PromptIterator(10, seed=3).take(10)
    assert sorted(first) == list(range(10))
    assert first == np.random.default_rng([3, 0]).permutation(10).tolist()
    assert PromptIterator(10, seed=4).take(10) != first
    assert PromptIterator(5, seed=3, shuffle=False).take(12) == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1]


def test_iterator_crosses_epochs_with_a_new_permutation():
    iterator = PromptIterator(7, seed=1)
    taken = iterator.take(4) + iterator.take(4) + iterator.take(13)
    epochs = [taken[:7], taken[7:14], taken[14:]]
    assert all(sorted(e) == list(range(7)) for e in epochs)
    assert epochs[0] != epochs[1]
    assert epochs[1] == np.random.default_rng([1, 1]).permutation(7).tolist()
    assert (iterator.epoch, iterator.position) == (3, 0)
    assert iterator.take(0) == []


def test_iterator_state_round_trip_continues_exactly():
    uninterrupted = PromptIterator(9, seed=11).take(40)
    iterator = PromptIterator(9, seed=11)
    head = iterator.take(13)
    state = json.loads(json.dumps(iterator.state()))
    assert state == {"size": 9, "seed": 11, "shuffle": True, "epoch": 1, "position": 4}
    resumed = PromptIterator.from_state(state)
    assert head + resumed.take(27) == uninterrupted
    restored = PromptIterator(9, seed=11)
    restored.restore(state)
    assert head + restored.take(27) == uninterrupted


def test_iterator_validates_arguments():
    with pytest.raises(ValueError, match="size must be at least 1, got 0"):
        PromptIterator(0, seed=0)
    with pytest.raises(ValueError, match="seed must be at least 0, got -1"):
        PromptIterator(3, seed=-1)
    with pytest.raises(TypeError, match="size must be an integer, got 2.5"):
        PromptIterator(2.5, seed=0)
    with pytest.raises(ValueError, match="k must be at least 0, got -2"):
        PromptIterator(3, seed=0).take(-2)
    with pytest.raises(ValueError, match="iterator state has seed=1, but this iterator has 0"):
        PromptIterator(3, seed=0).restore({"size": 3, "seed": 1, "shuffle": True, "epoch": 0, "position": 0})
    with pytest.raises(ValueError, match="state position must be below size=3, got 3"):
        PromptIterator(3, seed=0).restore({"epoch": 0, "position": 3})
    with pytest.raises(ValueError, match="iterator state lacks position"):
        PromptIterator(3, seed=0).restore({"epoch": 0})


def test_long_offending_values_are_shortened(tmp_path):
    bad = dict(ROWS[0], data_source=["x" * 1000])
    with pytest.raises(DataError, match=r"field 'data_source' must be a string, got \['x{75}\.\.\.$"):
        load_prompt_records(write_jsonl(tmp_path / "p.jsonl", [bad]))

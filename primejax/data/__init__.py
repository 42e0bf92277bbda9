"""Prompt data: Eurus-2-RL-Data rows, the prompt dataset and its order, and the built-in arithmetic task.

| what | module |
| --- | --- |
| loading prompt files (JSONL, parquet) | `prompts`: `load_prompt_records`, `PromptRecord`, `DataError` |
| chat template and overlong-prompt filter | `prompts`: `PromptDataset` |
| seeded, resumable order over a dataset | `prompts`: `PromptIterator` |
| the generated demo task | `arithmetic`: `make_rows`, `sft_examples`, `answer_only`, `tokenizer_corpus`, `write_jsonl` |
"""

from primejax.data import arithmetic
from primejax.data.prompts import (
    DataError,
    PromptDataset,
    PromptIterator,
    PromptRecord,
    load_prompt_records,
    prepare_messages,
)

__all__ = [
    "DataError",
    "PromptDataset",
    "PromptIterator",
    "PromptRecord",
    "arithmetic",
    "load_prompt_records",
    "prepare_messages",
]

"""Training and evaluation prompts in the Eurus-2-RL-Data schema, and the order they are drawn in.

One row per problem:

    {"data_source": "numina_olympiads",
     "prompt": [{"role": "system", "content": ...}, {"role": "user", "content": ...}],
     "ability": "math",
     "reward_model": {"ground_truth": "58", "style": "rule"},
     "extra_info": {...}}                          # optional

For code rows `ground_truth` is the JSON text of the APPS tests; it is kept as a string, untouched.

`load_prompt_records` reads such rows from JSONL and parquet files, `PromptDataset` applies the chat
template once and drops prompts longer than `max_prompt_length` tokens (as both reference
implementations do, `filter_overlong_prompts`), and `PromptIterator` yields a seeded, resumable
order over the dataset, one permutation per epoch.
"""

from __future__ import annotations

import dataclasses
import json
import numbers
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from primejax.tokenizer import Tokenizer

JSONL_EXTENSIONS = (".jsonl", ".json")
PARQUET_EXTENSIONS = (".parquet",)
GROUND_TRUTH_TYPES = (str, numbers.Number, list, Mapping)
SHOWN_VALUE_CHARS = 80


class DataError(ValueError):
    """A prompt file or row that cannot be used; the message names the file, the row and the field."""


@dataclasses.dataclass(frozen=True)
class PromptRecord:
    """One problem of a prompt file.

    Attributes:
      data_source: where the problem comes from ("numina_olympiads", "apps", ...).
      messages: the conversation to prompt with, as {"role", "content"} dicts.
      ability: the kind of task ("math", "code", ...); it picks the outcome verifier.
      ground_truth: the reference answer (for code, the APPS test JSON), as a string.
      index: the row's 0-based position among the rows of its file.
      source: the path of the file the row was read from.
      extra_info: the row's `extra_info` object, or an empty dict.
    """

    data_source: str
    messages: tuple[dict[str, str], ...]
    ability: str
    ground_truth: str
    index: int
    source: str
    extra_info: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def load_prompt_records(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[PromptRecord]:
    """Reads Eurus-schema rows from one file or several, concatenated in the order given.

    `.jsonl` and `.json` files hold one JSON object per line (blank lines are skipped); `.parquet`
    files are read with pyarrow, with `prompt` a list of structs and `reward_model` a struct.
    A plain string `prompt` is taken as one user message; a message keeps only its `role` and
    `content`. A `ground_truth` that is a number becomes `str(value)`; a list or an object becomes
    `json.dumps(value)`. Returns the records in file order; raises DataError naming the path (and,
    for a bad row, the line of a JSONL file (1-based) or the row of a parquet file (0-based), the
    field and its value) for a missing file, an unsupported extension, or a malformed row.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    records: list[PromptRecord] = []
    for path in map(os.fspath, paths):
        records.extend(_read_file(path))
    return records


def _read_file(path: str) -> list[PromptRecord]:
    """The records of one file, after checking that it exists and has a known extension."""
    extension = os.path.splitext(path)[1].lower()
    if extension not in JSONL_EXTENSIONS + PARQUET_EXTENSIONS:
        known = ", ".join(JSONL_EXTENSIONS + PARQUET_EXTENSIONS)
        raise DataError(f"{path}: unsupported file extension {extension or '(none)'!r}; expected one of {known}")
    if not os.path.isfile(path):
        raise DataError(f"{path}: prompt file not found")
    if extension in PARQUET_EXTENSIONS:
        return _read_parquet(path)
    return _read_jsonl(path)


def _read_jsonl(path: str) -> list[PromptRecord]:
    """The records of a JSONL file, one object per non-blank line."""
    records = []
    with open(path, encoding="utf-8") as f:
        for line_number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path} line {line_number}"
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{where}: invalid JSON: {e}") from None
            records.append(_parse_row(row, where, index=len(records), source=path))
    return records


def _read_parquet(path: str) -> list[PromptRecord]:
    """The records of a parquet file, nested structs converted to Python dicts and lists."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError) as e:
        raise DataError(f"{path}: cannot read parquet file: {e}") from None
    return [_parse_row(row, f"{path} row {i}", index=i, source=path) for i, row in enumerate(rows)]


def _parse_row(row: Any, where: str, *, index: int, source: str) -> PromptRecord:
    """Checks one row of the Eurus schema and returns its record; DataError naming `where` and the field."""
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected an object, got {type(row).__name__}")
    reward_model = _field(row, "reward_model", where, Mapping, "an object")
    extra_info = row.get("extra_info")
    if extra_info is not None and not isinstance(extra_info, Mapping):
        raise DataError(f"{where}: field 'extra_info' must be an object or null, got {_shown(extra_info)}")
    ground_truth = _field(reward_model, "ground_truth", where, GROUND_TRUTH_TYPES, "a string, number or list",
                          prefix="reward_model.")
    return PromptRecord(
        data_source=_field(row, "data_source", where, str, "a string"),
        messages=_messages(_field(row, "prompt", where, (str, list), "a string or a list of messages"), where),
        ability=_field(row, "ability", where, str, "a string"),
        ground_truth=_ground_truth_text(ground_truth),
        index=index,
        source=source,
        extra_info=dict(extra_info or {}),
    )


def _field(row: Mapping, name: str, where: str, types: type | tuple[type, ...], expected: str, prefix: str = "") -> Any:
    """`row[name]`, required present, not null and of `types` (never a bool); DataError naming the field."""
    if name not in row:
        raise DataError(f"{where}: field '{prefix}{name}' is missing")
    value = row[name]
    if value is None:
        raise DataError(f"{where}: field '{prefix}{name}' is null")
    if isinstance(value, bool) or not isinstance(value, types):
        raise DataError(f"{where}: field '{prefix}{name}' must be {expected}, got {_shown(value)}")
    return value


def _messages(prompt: str | list, where: str) -> tuple[dict[str, str], ...]:
    """The prompt as a tuple of {"role", "content"} dicts; a string is one user message."""
    if isinstance(prompt, str):
        return ({"role": "user", "content": prompt},)
    if not prompt:
        raise DataError(f"{where}: field 'prompt' is an empty list")
    messages = []
    for i, message in enumerate(prompt):
        if not isinstance(message, Mapping):
            raise DataError(f"{where}: field 'prompt[{i}]' must be an object, got {_shown(message)}")
        role = _field(message, "role", where, str, "a string", prefix=f"prompt[{i}].")
        content = _field(message, "content", where, str, "a string", prefix=f"prompt[{i}].")
        messages.append({"role": role, "content": content})
    return tuple(messages)


def _shown(value: Any) -> str:
    """`repr(value)`, cut to SHOWN_VALUE_CHARS characters for an error message."""
    text = repr(value)
    return text if len(text) <= SHOWN_VALUE_CHARS else text[: SHOWN_VALUE_CHARS - 3] + "..."


def _ground_truth_text(value: str | numbers.Number | list | Mapping) -> str:
    """The ground truth as a string: strings unchanged, numbers `str(value)`, lists and objects `json.dumps`."""
    if isinstance(value, str):
        return value
    if isinstance(value, numbers.Number):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


class PromptDataset:
    """Records with their prompt token ids, overlong prompts dropped.

    Each record's messages get `system_prompt` prepended as a system message when they have none,
    and `instruction_suffix` appended to the content of their last user message; the chat template
    is then applied, with the generation prompt. Prompts longer than `max_prompt_length` tokens
    are dropped and counted in `dropped_overlong`.

    On several processes, pass `share` (the records a process handles, given their count) and
    `gather` (every process's per-record results in record order): each process then applies the
    template only to its share to find the prompt lengths, and to other prompts when asked for them.

    Attributes:
      max_prompt_length: the most prompt tokens a kept record may have.
      dropped_overlong: how many records were dropped for being longer.
      longest: the token count of the longest prompt, kept or not.
    """

    def __init__(
        self,
        records: Sequence[PromptRecord],
        tokenizer: Tokenizer,
        max_prompt_length: int,
        *,
        system_prompt: str | None = None,
        instruction_suffix: str = "",
        share: Callable[[int], range] | None = None,
        gather: Callable[[np.ndarray, int], np.ndarray] | None = None,
    ):
        if isinstance(max_prompt_length, bool) or not isinstance(max_prompt_length, numbers.Integral):
            raise TypeError(f"max_prompt_length must be an integer, got {max_prompt_length!r}")
        if max_prompt_length < 1:
            raise ValueError(f"max_prompt_length must be at least 1, got {max_prompt_length}")
        if not records:
            raise DataError("no prompt records to build a dataset from")
        self.max_prompt_length = int(max_prompt_length)
        self._tokenizer = tokenizer
        messages = [prepare_messages(record, system_prompt, instruction_suffix) for record in records]
        mine = share(len(records)) if share is not None else range(len(records))
        tokens = {i: self._template(messages[i]) for i in mine}
        lengths = np.asarray([len(tokens[i]) for i in mine], np.int64)
        if gather is not None:
            lengths = gather(lengths, len(records))
        keep = lengths <= self.max_prompt_length
        self.longest = int(lengths.max())
        self.dropped_overlong = int((~keep).sum())
        kept = np.flatnonzero(keep)
        self._records: list[PromptRecord] = [records[i] for i in kept]
        self._messages: list[list[dict[str, str]]] = [messages[i] for i in kept]
        self._tokens: dict[int, tuple[int, ...]] = {new: tokens[old] for new, old in enumerate(kept) if old in tokens}
        if not self._records:
            raise DataError(
                f"all {len(records)} prompts are longer than max_prompt_length={self.max_prompt_length} tokens "
                f"(the longest has {self.longest})"
            )

    def _template(self, messages: list[dict[str, str]]) -> tuple[int, ...]:
        return tuple(self._tokenizer.apply_chat_template(messages, add_generation_prompt=True))

    def __len__(self) -> int:
        """The number of kept records."""
        return len(self._records)

    def tokens(self, i: int) -> list[int]:
        """The prompt token ids of kept record `i` (chat template and generation prompt applied)."""
        if i not in self._tokens:
            self._tokens[i] = self._template(self._messages[i])
        return list(self._tokens[i])

    def record(self, i: int) -> PromptRecord:
        """Kept record `i`, as loaded."""
        return self._records[i]

    def messages(self, i: int) -> list[dict[str, str]]:
        """The messages of kept record `i` as templated: system prompt and instruction suffix added."""
        return [dict(m) for m in self._messages[i]]


def prepare_messages(record: PromptRecord, system_prompt: str | None, instruction_suffix: str) -> list[dict[str, str]]:
    """A copy of the record's messages with `system_prompt` and `instruction_suffix` added.

    The system prompt is prepended only when no message has the role "system"; the suffix is
    appended to the last user message, and DataError is raised when a non-empty suffix finds none.
    """
    messages = [dict(m) for m in record.messages]
    if system_prompt is not None and not any(m["role"] == "system" for m in messages):
        messages.insert(0, {"role": "system", "content": system_prompt})
    if instruction_suffix:
        users = [m for m in messages if m["role"] == "user"]
        if not users:
            raise DataError(f"{record.source} row {record.index}: no user message to append the instruction to")
        users[-1]["content"] += instruction_suffix
    return messages


class PromptIterator:
    """A seeded, resumable order over the indices [0, size), one pass per epoch.

    Epoch e visits the indices in the order `numpy.random.default_rng([seed, e]).permutation(size)`
    when `shuffle` is true, else in increasing order. `take(k)` continues where the last call ended,
    crossing into the next epoch as needed; `state()` and `restore()` carry the position across a
    restart, so a resumed run draws exactly the indices an uninterrupted one would.
    """

    def __init__(self, size: int, seed: int = 0, *, shuffle: bool = True):
        self.size = _check_int("size", size, minimum=1)
        self.seed = _check_int("seed", seed, minimum=0)
        if not isinstance(shuffle, bool):
            raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
        self.shuffle = shuffle
        self._epoch = 0
        self._position = 0
        self._order: np.ndarray | None = None

    @property
    def epoch(self) -> int:
        """The epoch the next index comes from (0-based): the number of completed passes."""
        return self._epoch

    @property
    def position(self) -> int:
        """How many indices of the current epoch have been taken."""
        return self._position

    def order(self, epoch: int) -> np.ndarray:
        """The visiting order of `epoch`: an int64 array holding each index in [0, size) once."""
        _check_int("epoch", epoch, minimum=0)
        if not self.shuffle:
            return np.arange(self.size)
        return np.random.default_rng([self.seed, epoch]).permutation(self.size)

    def take(self, k: int) -> list[int]:
        """The next `k` indices (k >= 0; k may exceed `size`), as Python ints."""
        k = _check_int("k", k, minimum=0)
        out: list[int] = []
        while len(out) < k:
            if self._order is None:
                self._order = self.order(self._epoch)
            stop = min(self.size, self._position + k - len(out))
            out.extend(int(i) for i in self._order[self._position : stop])
            self._position = stop
            if self._position == self.size:
                self._epoch += 1
                self._position = 0
                self._order = None
        return out

    def state(self) -> dict[str, int | bool]:
        """The iterator's state as a JSON-serialisable dict: size, seed, shuffle, epoch, position."""
        return {"size": self.size, "seed": self.seed, "shuffle": self.shuffle, "epoch": self._epoch,
                "position": self._position}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continues from a `state()`; ValueError (TypeError for a wrong type) if it is malformed, or was saved with
        another size, seed or shuffle."""
        if not isinstance(state, Mapping):
            raise TypeError(f"iterator state must be a mapping, got {state!r}")
        for key in ("size", "seed", "shuffle"):
            if key in state and state[key] != getattr(self, key):
                raise ValueError(f"iterator state has {key}={state[key]!r}, but this iterator has {getattr(self, key)!r}")
        missing = [key for key in ("epoch", "position") if key not in state]
        if missing:
            raise ValueError(f"iterator state lacks {', '.join(missing)}: {dict(state)!r}")
        epoch = _check_int("state epoch", state["epoch"], minimum=0)
        position = _check_int("state position", state["position"], minimum=0)
        if position >= self.size:
            raise ValueError(f"state position must be below size={self.size}, got {position}")
        self._epoch, self._position, self._order = epoch, position, None

    @classmethod
    def from_state(cls, state: Mapping[str, Any]) -> PromptIterator:
        """A new iterator at the position of a `state()` (which must hold size, seed and shuffle)."""
        if not isinstance(state, Mapping):
            raise TypeError(f"iterator state must be a mapping, got {state!r}")
        missing = [key for key in ("size", "seed", "shuffle") if key not in state]
        if missing:
            raise ValueError(f"iterator state lacks {', '.join(missing)}: {dict(state)!r}")
        iterator = cls(state["size"], state["seed"], shuffle=state["shuffle"])
        iterator.restore(state)
        return iterator


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    """`value` as an int; TypeError naming `name` if it is not an integer (bools are not), ValueError if below `minimum`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, got {value}")
    return int(value)

"""MetricsWriter: the JSONL format, truncation on resume, TensorBoard events; Progress output."""

import io
import json
import math
import struct

import jax.numpy as jnp
import numpy as np
import pytest
from tensorboardX.proto import event_pb2

from primejax.train.metrics import MetricsWriter, Progress


def _metrics(step):
    """Deterministic metrics of one step, of assorted scalar types."""
    return {"loss": np.float32(1.0 / (step + 1)), "acc": jnp.float32(step / 10), "tokens": np.int64(100 * step)}


def _perf(step):
    return {"seconds": 0.1 * step, "tokens_per_s": float(step)}


def _read_events(directory):
    """The scalar events of every TensorBoard event file under `directory`, as (tag, step, value)."""
    scalars, purges = [], []
    for path in sorted(directory.rglob("events.out.tfevents.*")):
        data = path.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            if event.HasField("session_log"):
                purges.append(event.step)
            scalars += [(value.tag, event.step, value.simple_value) for value in event.summary.value]
    return scalars, purges


def test_lines_are_sorted_python_numbers_with_null_for_non_finite(tmp_path):
    with MetricsWriter(tmp_path, tensorboard=False) as writer:
        writer.write(3, {"z": jnp.bfloat16(1.5), "a": np.int32(2), "flag": np.bool_(True), "nan": float("nan")})
        writer.write(4, {"inf": jnp.float32(-np.inf), "x": 0.1})
        writer.write_perf(4, {"seconds": np.float64(2.25)})
        with pytest.raises(ValueError, match="reserved"):
            writer.write(5, {"step": 1})
        with pytest.raises(ValueError, match="'v' must be a scalar"):
            writer.write(5, {"v": np.zeros(2)})
    assert (tmp_path / "metrics.jsonl").read_text() == (
        '{"step": 3, "a": 2, "flag": 1, "nan": null, "z": 1.5}\n{"step": 4, "inf": null, "x": 0.1}\n'
    )
    assert (tmp_path / "perf.jsonl").read_text() == '{"step": 4, "seconds": 2.25}\n'


def _run(workdir, steps, resume_step=None):
    with MetricsWriter(workdir, resume_step=resume_step) as writer:
        for step in steps:
            writer.write(step, _metrics(step))
            writer.write_perf(step, _perf(step))


@pytest.mark.parametrize("resume_step", [3, 7])
def test_resumed_run_writes_the_same_bytes(tmp_path, resume_step):
    _run(tmp_path / "straight", range(10))
    # Killed while writing step 8's line, after step 7's; its last checkpoint was `resume_step`.
    _run(tmp_path / "resumed", range(8))
    with open(tmp_path / "resumed" / "metrics.jsonl", "a") as f:
        f.write('{"step": 8, "acc": 0.')
    with open(tmp_path / "resumed" / "perf.jsonl", "a") as f:
        f.write('{"step": 8, "sec')
    _run(tmp_path / "resumed", range(resume_step + 1, 10), resume_step=resume_step)
    for name in ("metrics.jsonl", "perf.jsonl"):
        assert (tmp_path / "resumed" / name).read_bytes() == (tmp_path / "straight" / name).read_bytes()
    assert [json.loads(line)["step"] for line in (tmp_path / "resumed" / "metrics.jsonl").open()] == list(range(10))


def test_a_fresh_run_empties_old_files_and_a_corrupt_line_is_an_error(tmp_path):
    _run(tmp_path, range(5))
    _run(tmp_path, range(2))
    assert [json.loads(line)["step"] for line in (tmp_path / "perf.jsonl").open()] == [0, 1]
    (tmp_path / "metrics.jsonl").write_text('{"step": 0}\nnot json\n{"step": 1}\n')
    with pytest.raises(ValueError, match=r"metrics.jsonl:2 is not a JSON record"):
        MetricsWriter(tmp_path, tensorboard=False, resume_step=1)


def test_disabled_writer_touches_nothing(tmp_path):
    with MetricsWriter(tmp_path / "run", enabled=False, resume_step=3) as writer:
        writer.write(1, _metrics(1))
        writer.write_perf(1, _perf(1))
        writer.flush()
    assert not (tmp_path / "run").exists()


def test_tensorboard_gets_scalars_and_a_purge_on_resume(tmp_path):
    _run(tmp_path, range(3))
    scalars, purges = _read_events(tmp_path / "tensorboard")
    assert ("loss", 2, pytest.approx(1 / 3)) in scalars
    assert ("perf/tokens_per_s", 1, 1.0) in scalars
    assert {tag for tag, _, _ in scalars} == {"loss", "acc", "tokens", "perf/seconds", "perf/tokens_per_s"}
    assert purges == [0]
    with MetricsWriter(tmp_path, resume_step=1) as writer:
        writer.write(2, {"loss": float("nan")})
    scalars, purges = _read_events(tmp_path / "tensorboard")
    assert purges == [0, 2]
    assert any(tag == "loss" and step == 2 and math.isnan(value) for tag, step, value in scalars)


class _Tty(io.StringIO):
    def isatty(self):
        return True


def test_progress_prints_lines_off_a_tty_and_draws_a_bar_on_one():
    stream = io.StringIO()
    with Progress(10, keys=("loss", "acc"), stream=stream) as progress:
        progress.update(1, {"loss": np.float32(0.123456), "other": 1.0})
        progress.update(2)
    assert stream.getvalue() == "step 1/10 loss=0.1235\nstep 2/10\n"
    stream = io.StringIO()
    with Progress(10, keys=("loss",), stream=stream, enabled=False) as progress:
        progress.update(1, {"loss": 1.0})
    assert stream.getvalue() == ""
    tty = _Tty()
    with Progress(10, initial=2, keys=("loss",), stream=tty) as progress:
        progress.update(3, {"loss": 0.5})
        progress.update(4, {"loss": 0.25})
    assert "4/10" in tty.getvalue() and "loss=0.25" in tty.getvalue()

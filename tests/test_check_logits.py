"""The logit checker CLI: passes on good checkpoints, fails loudly on bad ones."""

import os
import shutil

import pytest

from primejax.models import load_hf_checkpoint
from primejax.tokenizer import Tokenizer
from primejax.tools import check_logits


def test_passes_on_a_good_checkpoint(hf_checkpoint, capsys):
    assert check_logits.main(["--hf-dir", hf_checkpoint("llama_gqa2_llama3")]) == 0
    out = capsys.readouterr().out
    assert "PASS" in out and "left pads [0," in out


def test_fails_when_logits_differ_beyond_atol(hf_checkpoint, capsys):
    assert check_logits.main(["--hf-dir", hf_checkpoint("llama_gqa2_llama3"), "--atol", "1e-12"]) == 1
    assert "FAIL: logits differ beyond atol" in capsys.readouterr().out


@pytest.mark.parametrize("damage, message", [
    ("truncate", "cannot read safetensors file"),
    ("config", "config.json"),
    ("nothing", "does not exist"),
])
def test_fails_loudly_on_a_corrupted_checkpoint(hf_checkpoint, tmp_path, capsys, damage, message):
    path = str(tmp_path / "ckpt")
    shutil.copytree(hf_checkpoint("qwen2_gqa2"), path)
    if damage == "truncate":
        weights = os.path.join(path, "model.safetensors")
        with open(weights, "r+b") as f:
            f.truncate(os.path.getsize(weights) - 1000)
    elif damage == "config":
        with open(os.path.join(path, "config.json"), "w") as f:
            f.write('{"model_type": "qwen2", "vocab_size": ')
    else:
        path = str(tmp_path / "missing")
    assert check_logits.main(["--hf-dir", path]) == 2
    assert message in capsys.readouterr().err


def test_demo_writes_a_checkpoint_and_tokenizer_that_pass(tmp_path, capsys):
    assert check_logits.main(["--demo", "--workdir", str(tmp_path)]) == 0
    assert "PASS" in capsys.readouterr().out
    path = tmp_path / "demo_checkpoint"
    config, _ = load_hf_checkpoint(path)
    tokenizer = Tokenizer.from_dir(path)
    assert config.vocab_size == tokenizer.vocab_size == 300
    assert config.eos_token_ids == tokenizer.eos_ids


def test_generate_compares_greedy_continuations(hf_checkpoint, capsys):
    assert check_logits.main(["--hf-dir", hf_checkpoint("qwen2_mha_sliding"), "--generate", "12"]) == 0
    assert "12 new tokens x 4 rows: 0 tokens differ" in capsys.readouterr().out


def test_generate_fails_when_greedy_tokens_differ(hf_checkpoint, monkeypatch, capsys):
    real = check_logits.primejax_greedy
    monkeypatch.setattr(check_logits, "primejax_greedy", lambda *a: (real(*a) + 1) % 256)
    assert check_logits.main(["--hf-dir", hf_checkpoint("qwen2_mha_sliding"), "--generate", "12"]) == 1
    out = capsys.readouterr().out
    assert "48 tokens differ" in out and "FAIL: greedy tokens differ" in out

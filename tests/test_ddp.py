"""Data-parallel training (solutions/ddp.py): two CPU processes launched by torchrun, each on
half the batch, end one step with the weights one process gets on the whole batch."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def torchrun(*args: str) -> str:
    env = os.environ | {
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
        "MASTER_ADDR": "127.0.0.1",  # loopback only: no network needed
        "CUDA_VISIBLE_DEVICES": "",  # gloo on CPU, whatever the machine has
    }
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    command += ["--nproc_per_node", "2", "-m", "solutions.ddp", *args]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def test_two_ranks_on_half_batches_step_as_one_process_on_the_whole_batch():
    out = torchrun()
    assert "2 ranks on cpu (gloo, all_reduce by hand)" in out
    claims = [line for line in out.splitlines() if line.endswith(("True", "False"))]
    assert len(claims) == 4 and all(line.endswith("True") for line in claims), out


@pytest.mark.slow
def test_the_same_with_distributed_data_parallel():
    out = torchrun("--wrapper")
    assert "(gloo, DistributedDataParallel)" in out
    claims = [line for line in out.splitlines() if line.endswith(("True", "False"))]
    assert len(claims) == 4 and all(line.endswith("True") for line in claims), out

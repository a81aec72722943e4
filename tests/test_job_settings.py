"""Speed settings are given to the parts when they are built and process-wide settings are put
back after each run (odex/build.py, odex/ode/field_options.py, odex.sweep.process_state.job_settings):
two jobs with different precision and compile settings, run one after the other in one process (as
Hydra's basic launcher runs a sweep's jobs), each give the numbers of that job run alone in a fresh
process, to the bit, and leave the process's settings as they found them."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
import torch

from conftest import TINY, read_summary, run_cli, train_in_process

JOBS = {"bf16_compiled": ["trainer.precision=bf16", "trainer.compile=aot_eager"],
        "fp32_eager": ["trainer.precision=fp32", "trainer.compile=false"]}
NUMBERS = ("train/loss", "train/acc", "test/loss", "test/acc", "nfe/forward")


def process_settings() -> dict:
    """Read directly from torch, not through the code under test."""
    import torch._functorch.config as functorch_config

    return {"threads": torch.get_num_threads(), "donated_buffer": functorch_config.donated_buffer,
            "matmul_tf32": torch.backends.cuda.matmul.allow_tf32, "cudnn_tf32": torch.backends.cudnn.allow_tf32,
            "default_dtype": torch.get_default_dtype(), "autocast_cpu": torch.is_autocast_enabled("cpu")}


@pytest.mark.slow
def test_two_jobs_in_one_process_each_get_their_own_numbers(tmp_path):
    def alone(name):        # the job alone in a fresh process (the CLI), beside the in-process jobs
        (tmp_path / f"alone_{name}").mkdir()
        return run_cli(tmp_path / f"alone_{name}", *TINY, "solver=euler", *JOBS[name])

    with ThreadPoolExecutor(len(JOBS)) as pool:
        fresh = {name: pool.submit(alone, name) for name in JOBS}
        before = process_settings()
        in_process = {name: train_in_process(tmp_path / name, [*TINY, "solver=euler", *overrides])
                      for name, overrides in JOBS.items()}          # bf16 + compiled first, then fp32 eager
        assert process_settings() == before
        for name, proc in fresh.items():
            assert proc.result().returncode == 0, proc.result().stderr[-2000:]
    for name in JOBS:
        ref = read_summary(tmp_path / f"alone_{name}" / "run")
        assert in_process[name]["status"] == "completed"
        assert {k: in_process[name][k] for k in NUMBERS} == {k: ref[k] for k in NUMBERS}, name
    # each job really ran with its own settings
    assert in_process["bf16_compiled"]["train/loss"] != in_process["fp32_eager"]["train/loss"]

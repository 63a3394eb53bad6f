"""A killed training task stops its whole training process group: no orphan keeps a
core and gigabytes busy after the task is gone. The training is also the first the
kernel's out-of-memory killer takes."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from recsys.settings import Settings
from recsys.training.job import TrainingJob
from recsys.training.local import LocalTraining

# a training job that starts a helper process of its own, as TensorFlow's data workers would
FAKE_TRAIN = """\
import os, subprocess, sys, time
from pathlib import Path
root = Path(os.environ["RECSYS_ML_ROOT"])
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
(root / "pids").write_text(f"{os.getpid()} {child.pid}")
(root / "oom").write_text(open("/proc/self/oom_score_adj").read())
print("epoch 1/20 ...", flush=True)
time.sleep(300)
"""


class TaskKilled(Exception):
    """What Airflow's SIGTERM handler raises inside a task being killed or timed out."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for every purpose but its process table entry
    with open(f"/proc/{pid}/stat") as handle:
        return handle.read().split()[2] != "Z"


@pytest.mark.skipif(not Path("/proc/self/oom_score_adj").exists(), reason="needs Linux /proc")
def test_a_killed_task_takes_its_training_processes_with_it(tmp_path):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    settings = Settings.from_env({"RECSYS_HOME": str(tmp_path / "home"),
                                  "RECSYS_TRAIN_COMMAND": f"{sys.executable} {script}"})
    root = tmp_path / "ml"
    (root / "output").mkdir(parents=True)
    job = TrainingJob(name="recsys-test-job", dataset_uri="file:///nowhere", layout=None, hyperparameters={})

    def kill_the_task(signum, frame):
        raise TaskKilled()

    previous = signal.signal(signal.SIGALRM, kill_the_task)
    signal.alarm(3)
    try:
        with pytest.raises(TaskKilled):
            LocalTraining(settings)._run(job, root)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)

    trainer, helper = (int(pid) for pid in (root / "pids").read_text().split())
    deadline = time.monotonic() + 15
    while (_alive(trainer) or _alive(helper)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(trainer), "the training process outlived its task"
    assert not _alive(helper), "a process the training started outlived the task"
    assert (root / "oom").read_text().strip() == "1000"

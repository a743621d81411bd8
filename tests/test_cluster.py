"""Tables as cluster jobs through submitit: the Slurm job scripts (checked against stand-in sbatch / sacct / squeue
on the PATH), a second submission that submits nothing, the whole table through submitit's local executor with a
job pre-empted and re-queued, a job of two tasks equal to torchrun's two processes, and the pieces they rest on."""
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

from tests.conftest import ROOT, write_cifar

submitit = pytest.importorskip("submitit")  # an optional dependency (README, "On a Slurm cluster")

from utils.cluster import ClusterOptions, parameters, parse_extra  # noqa: E402
from utils.cluster_job import process_group_variables  # noqa: E402
from utils.cluster_state import JobBook, _parse  # noqa: E402
from utils.errors import UsageError  # noqa: E402
from utils.interrupt import StopRequest  # noqa: E402
from utils.run_lock import LOCK, remove_stale_lock  # noqa: E402

pytestmark = pytest.mark.slow  # starts processes

EXTRA = "--epochs 2 --width 8 -j 0 --no_download -p 1 -b 16"
STAGE_EXTRA = "--epochs 1 -j 0"

# Stand-ins for Slurm's commands: sbatch keeps each script and answers with the next job id; sacct lists every
# job kept (an array's tasks as one unstarted range) as PENDING unless the test's states file says otherwise;
# squeue answers nothing; srun and scontrol do nothing.
SBATCH = """import os, sys
folder = os.environ["SLURM_STANDIN"]
path = os.path.join(folder, "next")
job = int(open(path).read()) if os.path.exists(path) else 100
if job >= int(os.environ.get("STANDIN_REFUSE_FROM", 10 ** 9)):
    sys.exit("sbatch: error: QOSMaxSubmitJobPerUserLimit")
open(path, "w").write(str(job + 1))
open(os.path.join(folder, f"job{job}.sh"), "w").write(open(sys.argv[-1]).read())
print(f"Submitted batch job {job}")
"""
SACCT = """import os, re, sys
folder = os.environ["SLURM_STANDIN"]
states = dict(line.split("|") for line in open(os.path.join(folder, "states")).read().split()) \\
    if os.path.exists(os.path.join(folder, "states")) else {}
print("JobID|State")
for name in sorted(os.listdir(folder)):
    if name.startswith("job"):
        job = name[3:-3]
        array = re.search(r"--array=0-(\\d+)", open(os.path.join(folder, name)).read())
        ids = [f"{job}_{i}" for i in range(int(array.group(1)) + 1)] if array else [job]
        for i in ids:
            print(f"{i}|{states.get(i, 'PENDING')}")
"""


@pytest.fixture
def slurm(tmp_path, monkeypatch):
    """A folder of stand-in Slurm commands first on the PATH; the folder where sbatch keeps the scripts."""
    bin_dir, kept = tmp_path / "bin", tmp_path / "slurm"
    bin_dir.mkdir()
    kept.mkdir()
    for name, body in (("sbatch", SBATCH), ("sacct", SACCT), ("squeue", ""), ("srun", ""), ("scontrol", "")):
        (bin_dir / name).write_text(f"#!{sys.executable}\n{body}")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SLURM_STANDIN", str(kept))
    return kept


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp("cluster") / "data")
    write_cifar(folder, train_per_class=100, test_per_class=3)
    return folder


def table_command(root, out, *more, seeds="2"):
    return [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), "cifar10-lt", "--seeds", seeds,
            "--rows", "cifar10-if100", "--root", root, "--extra", EXTRA, "--maxnorm_extra", STAGE_EXTRA,
            "--out", str(out), *more]


def run(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=600, **kw)
    return done.returncode, done.stdout, done.stderr


def scripts(kept):
    return {int(p.name[3:-3]): p.read_text() for p in kept.glob("job*.sh")}


def test_slurm_job_scripts_and_a_second_submission_that_submits_nothing(root, tmp_path, slurm):
    out = tmp_path / "t"
    flags = ["--cluster", "slurm", "--slurm_partition", "gpu", "--slurm_account", "lab", "--timeout_min", "240",
             "--slurm_extra", "mem=16G"]
    code, dry, err = run(table_command(root, out, *flags, "--dry_run"))
    assert code == 0, err
    assert not scripts(slurm), "a dry run submits nothing"
    code, first, err = run(table_command(root, out, *flags))
    assert code == 0, err
    kept = scripts(slurm)
    assert sorted(kept) == [100, 101, 102, 103, 104]  # the 4 training runs as one array, then each MaxNorm stage
    array = kept[100]
    for line in ("--array=0-3%4", "--partition=gpu", "--account=lab", "--time=240", "--nodes=1",
                 "--ntasks-per-node=1", "--gpus-per-node=1", "--mem=16G", "--signal=USR2@120", "--requeue"):
        assert f"#SBATCH {line}\n" in array, line
    assert "dependency" not in array
    # the array's task order is the runs' order; each stage waits for its base run's task
    order = ["cifar10-if100-glmc-s1", "cifar10-if100-updated-s1", "cifar10-if100-glmc-s2", "cifar10-if100-updated-s2"]
    record = JobBook(str(out)).runs
    assert [record[n]["job"] for n in order] == ["100_0", "100_1", "100_2", "100_3"]
    stage_bases = {"cifar10-if100-maxnorm-s1": "100_1", "cifar10-if100-glmc-maxnorm-s1": "100_0",
                   "cifar10-if100-maxnorm-s2": "100_3", "cifar10-if100-glmc-maxnorm-s2": "100_2"}
    for stage, base in stage_bases.items():
        script = kept[int(record[stage]["job"])]
        assert f"#SBATCH --dependency=afterok:{base}\n" in script and "--kill-on-invalid-dep=yes" in script
        assert "--gpus-per-node=1" in script and "--array" not in script
    # the dry run printed the very script that was submitted (its array part)
    assert array in dry
    assert ": queued" not in first and "submitted 8 jobs" in first

    code, second, err = run(table_command(root, out, *flags))
    assert code == 0, err
    assert sorted(scripts(slurm)) == [100, 101, 102, 103, 104], "nothing is submitted twice"
    assert "nothing to submit" in second and "cifar10-if100-glmc-s1: queued (job 100_0)" in second

    # a failed run is submitted again, alone; its stage (cancelled by Slurm with its dependency) after it
    (slurm / "states").write_text(f"100_1|FAILED\n{record['cifar10-if100-maxnorm-s1']['job']}|CANCELLED\n")
    os.makedirs(out / "logs", exist_ok=True)
    (out / "logs" / "cifar10-if100-updated-s1.log").write_text("Traceback ...\nRuntimeError: the node fell over\n")
    code, third, err = run(table_command(root, out, *flags))
    assert code == 0, err
    assert "the node fell over" in third and "submitted 2 jobs" in third
    kept = scripts(slurm)
    assert sorted(kept) == [100, 101, 102, 103, 104, 105, 106]
    assert "--array" not in kept[105] and "#SBATCH --dependency=afterok:105\n" in kept[106]
    assert JobBook(str(out)).runs["cifar10-if100-updated-s1"]["jobs"] == ["100_1", "105"]
    # nor does a sweep on this machine run what the queued jobs hold
    code, _, err = run(table_command(root, out))
    assert code == 2 and "queued or running as slurm jobs" in err and "--cluster slurm" in err, err
    assert sorted(os.listdir(out / "logs")) == ["cifar10-if100-updated-s1.log"]


def test_a_job_of_two_nodes_of_eight_gpus(tmp_path):
    """(No srun here: a dry run does not need one.) The paper's -b 120 does not split over 16 processes."""
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), "imagenet-lt", "--seeds", "1", "--rows",
           "imagenet-lt-glmc", "--root", str(tmp_path), "--out", str(tmp_path / "t"), "--cluster", "slurm",
           "--nodes_per_run", "2", "--dry_run"]
    code, dry, err = run(cmd)
    assert code == 2 and "-b 120 (the global batch) does not split over the 16 processes" in err, err
    code, dry, err = run(cmd + ["--extra", "-b 128"])
    for line in ("--nodes=2", "--ntasks-per-node=8", "--gpus-per-node=8", "--signal=USR2@120"):
        assert f"#SBATCH {line}\n" in dry, line
    assert "srun --unbuffered" in dry and "submitit.core._submit" in dry and " -b 128 " in dry


def children(pid):
    """The processes whose parent is `pid`."""
    found = []
    for entry in os.listdir("/proc"):
        try:
            stat = open(f"/proc/{entry}/stat").read()
        except (OSError, ValueError):
            continue
        if entry.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return found


def wait_for_line(path, needle, timeout=300):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if os.path.exists(path) and needle in open(path, errors="replace").read():
            return
        time.sleep(0.05)
    raise AssertionError(f"no {needle!r} in {path}")


def final_weights(run_dir):
    return torch.load(os.path.join(run_dir, "ckpt.pth.tar"), weights_only=False)["state_dict"]


def test_a_table_through_the_local_executor_with_a_job_pre_empted_and_re_queued(root, tmp_path):
    out = tmp_path / "t"
    code, first, err = run(table_command(root, out, "--cluster", "local"))
    assert code == 0 and "submitted 8 jobs" in first, err
    name = "cifar10-if100-glmc-s1"
    log = str(out / "logs" / f"{name}.log")
    wait_for_line(log, "epoch 1/2 step 3/")
    (task,) = children(int(JobBook(str(out)).job(name)))  # the job's one task, as Slurm would signal it
    os.kill(task, signal.SIGUSR2)
    deadline = time.time() + 400
    while True:
        code, again, err = run(table_command(root, out, "--cluster", "local"))
        assert code == 0, err
        assert "nothing to submit" in again, again  # never a second job for a run that has one
        if "8/8 done" in again:
            break
        assert time.time() < deadline, again
        time.sleep(3)
    text = open(log).read()
    stop = re.search(r"stopped by SIGUSR2 at epoch 1, step (\d+)/\d+", text)
    assert stop and "re-queued: " in text, text
    starts = re.findall(r"^\$ python (.*)$", text, re.M)
    assert len(starts) == 2 and starts[1] == starts[0] + f" --resume {out / 'runs' / name}"  # by itself
    assert "re-queued 1 time" in again
    table = open(out / "table.md").read()
    assert table.count("| 2 |") == 4  # each cell over both seeds
    # the same command, uninterrupted, in one process: the same weights, bit for bit
    argv = text.split("$ python ", 1)[1].splitlines()[0].split()
    argv[argv.index("--root_log") + 1] = str(tmp_path / "straight")
    code, _, err = run([sys.executable, *argv])
    assert code == 0, err
    reference = final_weights(str(tmp_path / "straight" / name))
    resumed = final_weights(str(out / "runs" / name))
    assert max((reference[k].double() - resumed[k].double()).abs().max().item() for k in reference) == 0.0


def test_a_job_of_two_tasks_trains_as_torchrun_s_two_processes(root, tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "reproduce.py"), "cifar-lt-standard", "--seeds", "1",
           "--rows", "cifar10-if100", "--root", root, "--extra", EXTRA.replace("--epochs 2", "--epochs 1"),
           "--out", str(tmp_path / "t"), "--cluster", "local", "--gpus_per_run", "2"]
    code, first, err = run(cmd)
    assert code == 0 and "submitted 1 job" in first, err
    name = "cifar10-if100-standard-s1"
    deadline = time.time() + 400
    while "1/1 done" not in run(cmd)[1]:
        assert time.time() < deadline
        time.sleep(3)
    log = open(tmp_path / "t" / "logs" / f"{name}.log").read()
    assert "task 0 of 2" in log and os.path.exists(tmp_path / "t" / "logs" / f"{name}.rank1.log"), log
    argv = log.split("$ python ", 1)[1].splitlines()[0].split()
    argv[argv.index("--root_log") + 1] = str(tmp_path / "torchrun")
    code, _, err = run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *argv])
    assert code == 0, err
    ours, theirs = final_weights(str(tmp_path / "t" / "runs" / name)), final_weights(str(tmp_path / "torchrun" / name))
    assert max((ours[k].double() - theirs[k].double()).abs().max().item() for k in ours) == 0.0


# ---------------------------------------------------------------- the pieces


class FakeEnvironment:
    def __init__(self, rank, local, tasks, job, hosts):
        self.global_rank, self.local_rank, self.num_tasks = rank, local, tasks
        self.raw_job_id, self.hostnames = job, hosts


def test_a_task_s_process_group_comes_from_the_job():
    assert process_group_variables(FakeEnvironment(0, 0, 1, "77", ["a"])) == {}
    variables = process_group_variables(FakeEnvironment(11, 3, 16, "4242", ["gpu03", "gpu04"]))
    assert variables == {"RANK": "11", "WORLD_SIZE": "16", "LOCAL_RANK": "3", "MASTER_ADDR": "gpu03",
                         "MASTER_PORT": str(15000 + 4242 % 20000)}


def test_sacct_lines_are_read_task_by_task():
    text = "JobID|State\n12_[2-4%3]|PENDING\n12_0|RUNNING\n12_1|CANCELLED by 501\n13|COMPLETED\n13.batch|COMPLETED\n"
    assert _parse(text, header=True) == {"12_2": "PENDING", "12_3": "PENDING", "12_4": "PENDING",
                                         "12_0": "RUNNING", "12_1": "CANCELLED", "13": "COMPLETED"}


def test_a_lock_left_on_another_node_by_the_run_s_own_earlier_job_is_removed_and_no_other(tmp_path):
    lock = tmp_path / LOCK
    lock.write_text(json.dumps({"pid": 5, "host": "node-elsewhere", "job": "88_3"}))
    assert remove_stale_lock(str(tmp_path), ["12"]) is None and lock.exists()  # another job's: kept
    lock.write_text(json.dumps({"pid": 5, "host": socket.gethostname(), "job": "88_3"}))
    assert remove_stale_lock(str(tmp_path), ["88_3"]) is None and lock.exists()  # this host: flock tells
    lock.write_text(json.dumps({"pid": 5, "host": "node-elsewhere"}))
    assert remove_stale_lock(str(tmp_path), ["88_3"]) is None and lock.exists()  # no job: a manual run's
    lock.write_text(json.dumps({"pid": 5, "host": "node-elsewhere", "job": "88_3"}))
    assert "node-elsewhere" in remove_stale_lock(str(tmp_path), ["88_3"]) and not lock.exists()


def test_a_repeated_sigusr2_keeps_the_checkpoint_while_a_second_sigterm_exits_at_once():
    with StopRequest() as stop:
        os.kill(os.getpid(), signal.SIGUSR2)
        os.kill(os.getpid(), signal.SIGUSR2)  # would exit the process without a checkpoint, were it a SIGTERM
        assert stop.signum == signal.SIGUSR2 and stop.exit_code == 128 + signal.SIGUSR2
    code = subprocess.run([sys.executable, "-c", "import os, signal, time\nfrom utils.interrupt import StopRequest\n"
                           "with StopRequest():\n    os.kill(os.getpid(), signal.SIGTERM)\n"
                           "    os.kill(os.getpid(), signal.SIGTERM)\n    time.sleep(5)\n"], cwd=ROOT).returncode
    assert code == 128 + signal.SIGTERM


def test_the_executor_parameters():
    options = ClusterOptions("slurm", 240, 8, 2, "gpu", None, "high", "a100", {"mem": "64G"})
    assert parameters(options, "x", 2, 8) == {
        "job_name": "x", "time": 240, "nodes": 2, "ntasks_per_node": 8, "gpus_per_node": 8, "partition": "gpu",
        "qos": "high", "constraint": "a100", "signal_delay_s": 120, "stderr_to_stdout": True,
        "setup": [f"export PYTHONPATH={ROOT}${{PYTHONPATH:+:$PYTHONPATH}}"],
        "additional_parameters": {"requeue": True, "mem": "64G"}}
    cpu = parameters(ClusterOptions("slurm", 60, 0), "x", 1, 0, "afterok:5")
    assert "gpus_per_node" not in cpu and cpu["ntasks_per_node"] == 1 and cpu["dependency"] == "afterok:5"
    assert cpu["additional_parameters"] == {"requeue": True, "kill-on-invalid-dep": "yes"}
    assert parameters(ClusterOptions("local", 30, 2), "x", 1, 2) == {
        "timeout_min": 30, "tasks_per_node": 2, "gpus_per_node": 2, "signal_delay_s": 120}
    assert parse_extra(["mem=64G", "--cpus-per-task=10"]) == {"mem": "64G", "cpus-per-task": "10"}
    with pytest.raises(UsageError, match="KEY=VALUE"):
        parse_extra(["mem"])


@pytest.mark.parametrize("flags, needle", [
    (["--cluster", "local", "--slurm_partition", "gpu"], "--slurm_partition is for --cluster slurm"),
    (["--cluster", "local", "--gpus", "0"], "--gpus_per_run"),
    (["--cluster", "local", "--nodes_per_run", "2"], "this machine only"),
    (["--cluster", "slurm", "--timeout_min", "1"], "no time before the signal"),
    (["--cluster", "slurm", "--gpus_per_run", "-1"], "--gpus_per_run -1 must be 0 or more"),
    (["--cluster", "slurm"], "no srun"),
])
def test_bad_cluster_flags_stop_in_one_line(root, tmp_path, flags, needle):
    code, out, err = run(table_command(root, tmp_path / "t", *flags))
    assert code == 2 and needle in err and "Traceback" not in err, err


def test_without_submitit_the_cluster_says_how_to_install_it(root, tmp_path):
    blocker = tmp_path / "block"
    blocker.mkdir()
    (blocker / "submitit.py").write_text("raise ImportError('no submitit here')\n")
    code, out, err = run(table_command(root, tmp_path / "t", "--cluster", "slurm"),
                         env={**os.environ, "PYTHONPATH": str(blocker)})
    assert code == 2 and "pip install submitit" in err and len(err.strip().splitlines()) == 1, err


def test_a_run_longer_than_its_time_limit_goes_on_in_re_queued_jobs(root, tmp_path, monkeypatch):
    """A job of one minute, warned 45 s before its limit, on a run of about 25 s of training plus start-ups: it
    takes several jobs, each re-queued after saving, and ends bit-identical to the run made in one go."""
    from utils.cluster import submit
    from utils.cluster_state import ENDED, local_state
    from utils.sweep import Job

    name, runs = "long", str(tmp_path / "runs")
    argv = [os.path.join(ROOT, "main.py"), "--dataset", "cifar10", "-a", "resnet32", "--width", "8", "-j", "0",
            "--no_download", "-p", "1", "-b", "16", "--epochs", "16", "--imbanlance_rate", "0.01", "--root", root,
            "--no_tensorboard", "--root_log", runs, "--name", name]
    job = Job(name, argv, str(tmp_path / "logs" / f"{name}.log"), 16, os.path.join(runs, name))
    options = ClusterOptions("local", timeout_min=1, gpus_per_run=0, signal_delay_s=45)
    submit([job], options, str(tmp_path), "t", lambda message: None, JobBook(str(tmp_path)), {})
    job_id = JobBook(str(tmp_path)).job(name)
    deadline = time.time() + 500
    while local_state(job_id) != ENDED:
        assert time.time() < deadline
        time.sleep(1)
    text = open(job.log).read()
    requeues = text.count("re-queued: ")
    assert requeues >= 2 and len(re.findall(r"^\$ python ", text, re.M)) == requeues + 1, text[-3000:]
    assert os.path.exists(tmp_path / "jobs" / f"{name}.done")
    argv[argv.index("--root_log") + 1] = str(tmp_path / "straight")
    code, _, err = run([sys.executable, *argv])
    assert code == 0, err
    reference, resumed = final_weights(str(tmp_path / "straight" / name)), final_weights(os.path.join(runs, name))
    assert max((reference[k].double() - resumed[k].double()).abs().max().item() for k in reference) == 0.0


def test_a_submission_refused_midway_keeps_what_was_submitted_and_the_same_command_submits_the_rest(
        root, tmp_path, slurm, monkeypatch):
    out = tmp_path / "t"
    monkeypatch.setenv("STANDIN_REFUSE_FROM", "102")  # the array and one stage go through, then sbatch refuses
    code, _, err = run(table_command(root, out, "--cluster", "slurm"))
    assert code == 2 and "QOSMaxSubmitJobPerUserLimit" in err and "5 jobs submitted before it are recorded" in err, err
    assert sorted(JobBook(str(out)).runs) == sorted(["cifar10-if100-glmc-s1", "cifar10-if100-updated-s1",
                                                     "cifar10-if100-glmc-s2", "cifar10-if100-updated-s2",
                                                     "cifar10-if100-maxnorm-s1"])
    monkeypatch.delenv("STANDIN_REFUSE_FROM")
    code, again, err = run(table_command(root, out, "--cluster", "slurm"))
    assert code == 0 and "submitted 3 jobs" in again, err
    assert sorted(scripts(slurm)) == [100, 101, 102, 103, 104]  # no second array

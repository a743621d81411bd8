"""torchrun on the CPU (gloo): one process group for every seed, rank 0 first at the data, and a worker
group restarted by `--max_restarts` continuing its run folder by itself."""
import glob
import re
import os
import signal
import socket
import subprocess
import sys
import time

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from tests.conftest import ROOT, TINY_TRAIN, write_cifar
from utils import torchrun_restarts
from utils.distributed import World, first_host, main_rank_first, slurm_environment
from utils.errors import UsageError


def _rank_zero_first(rank, init_file, marker, fail, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    world = World(rank, 2, rank)

    def build():
        if rank == 0:
            if fail:
                raise OSError("no network")
            with open(marker, "w") as f:
                f.write("downloaded")
            return "rank 0 built"
        return f"rank 1 found {open(marker).read()}"  # only after rank 0 is done

    try:
        results[rank] = main_rank_first(world, build, "downloading")
    except (OSError, UsageError) as exc:
        results[rank] = f"{exc.__class__.__name__}: {exc}"
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
@pytest.mark.parametrize("fail", [False, True])
def test_rank_zero_builds_first_and_its_failure_stops_the_others(tmp_path, fail):
    results = mp.Manager().dict()
    mp.spawn(_rank_zero_first, args=(str(tmp_path / "init"), str(tmp_path / "marker"), fail, results), nprocs=2)
    if fail:
        assert results[0] == "OSError: no network"
        assert results[1] == "UsageError: process 0 failed while downloading (OSError: no network)"
    else:
        assert results[0] == "rank 0 built" and results[1] == "rank 1 found downloaded"


def test_restart_notes_name_the_run_folder_only_once_it_has_a_checkpoint(tmp_path):
    run_dir = tmp_path / "runs" / "a"
    run_dir.mkdir(parents=True)
    (run_dir / "args.json").write_text("{}")
    torchrun_restarts.remember_elastic_run(str(tmp_path / "runs"), "job", 1, str(run_dir))
    assert torchrun_restarts.elastic_run_to_continue(str(tmp_path / "runs"), "job", 1) is None  # nothing yet
    (run_dir / "ckpt.pth.tar").write_bytes(b"")
    assert torchrun_restarts.elastic_run_to_continue(str(tmp_path / "runs"), "job", 1) == str(run_dir)
    assert torchrun_restarts.elastic_run_to_continue(str(tmp_path / "runs"), "job", 2) is None  # another seed
    assert torchrun_restarts.elastic_run_to_continue(str(tmp_path / "runs"), "other job", 1) is None
    torchrun_restarts.forget_elastic_runs(str(tmp_path / "runs"), "job", [1, 2])
    assert os.listdir(tmp_path / "runs") == ["a"]


def torchrun(root_log, data_root, kill_rank=None, kill_at=None, after=None):
    """`torchrun --nproc_per_node=2 --max_restarts 1 main.py ... --seeds 1,2`; with `kill_at`, SIGKILL the
    worker of rank `kill_rank` when rank 0 prints a line starting so (after a line starting with `after`).
    Returns the output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--max_restarts", "1",
           os.path.join(ROOT, "main.py"), *TINY_TRAIN, "--root", data_root, "--epochs", "2", "--seeds", "1,2",
           "--root_log", str(root_log)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    lines, killed, armed = [], False, after is None
    for line in proc.stdout:
        lines.append(line)
        armed = armed or line.startswith(after)
        if kill_at and armed and not killed and line.startswith(kill_at):
            children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True,
                                      text=True).stdout.split()
            for pid in map(int, children):
                with open(f"/proc/{pid}/environ", "rb") as f:
                    if f"RANK={kill_rank}".encode() in f.read().split(b"\0"):
                        os.kill(pid, signal.SIGKILL)
                        killed = True
    assert proc.wait(timeout=600) == 0, "".join(lines[-30:])
    assert killed or not kill_at
    return "".join(lines)


def final_weights(root_log):
    out = {}
    for path in glob.glob(os.path.join(str(root_log), "*", "ckpt.pth.tar")):
        checkpoint = torch.load(path, weights_only=False)
        out[checkpoint["run"]["args"]["seed"]] = (checkpoint["epoch"], checkpoint["state_dict"])
    return out


@pytest.mark.slow
def test_a_killed_worker_costs_part_of_an_epoch_and_changes_nothing(tmp_path):
    data_root = str(tmp_path / "data")
    write_cifar(data_root, train_per_class=60, test_per_class=2)  # 240 images: 8 steps per process and epoch
    torchrun(tmp_path / "whole", data_root)
    # seed 1 done; seed 2 loses its worker of rank 1 in its second epoch
    out = torchrun(tmp_path / "killed", data_root, kill_rank=1, kill_at="epoch 2/2 step 4/", after="done:")
    assert "torchrun restart: continuing" in out and "continuing at epoch 2" in out
    assert "is finished (2/2 epochs" in out  # the restarted group passes over seed 1
    assert len(os.listdir(tmp_path / "killed")) == 2  # no third folder, no restart notes left
    whole, killed = final_weights(tmp_path / "whole"), final_weights(tmp_path / "killed")
    assert sorted(whole) == sorted(killed) == [1, 2]
    for seed in (1, 2):
        assert whole[seed][0] == killed[seed][0] == 2
        assert all(torch.equal(whole[seed][1][k], killed[seed][1][k]) for k in whole[seed][1])


def test_the_first_host_of_a_slurm_host_list_and_the_variables_of_an_srun_task():
    assert [first_host(h) for h in ("gpu[03-05,07],cpu1", "a,b", "node-a[1-2]", "single")] == [
        "gpu03", "a", "node-a1", "single"]
    task = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "4",
            "SLURM_STEP_NODELIST": "gpu[07-08]", "SLURM_JOB_ID": "4242"}
    assert slurm_environment(task) == {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "gpu07",
                                       "MASTER_PORT": str(15000 + 4242 % 20000)}
    # a batch script's own process (no step of several tasks) and torchrun's workers are left alone
    assert slurm_environment({"SLURM_PROCID": "0", "SLURM_NTASKS": "8"}) == {}
    assert slurm_environment({**task, "WORLD_SIZE": "2"}) == {}


@pytest.mark.slow
def test_main_py_as_the_tasks_of_an_srun_step_equals_torchrun(tmp_path):
    """Two processes started with the variables srun gives its tasks (no torchrun) form the process group
    and train to the same final weights as torchrun's two processes."""
    root = str(tmp_path / "data")
    write_cifar(root, train_per_class=20, test_per_class=3)
    argv = [os.path.join(ROOT, "main.py"), *TINY_TRAIN, "--root", root, "--epochs", "1", "--name", "run"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                           *argv, "--root_log", str(tmp_path / "torchrun")], capture_output=True, text=True,
                          timeout=300, cwd=ROOT, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    with socket.socket() as s:  # a free port for the step's rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    tasks = [subprocess.Popen([sys.executable, *argv, "--root_log", str(tmp_path / "srun")], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT,
                              env={**env, "SLURM_PROCID": str(rank), "SLURM_LOCALID": str(rank), "SLURM_NTASKS": "2",
                                   "SLURM_STEP_NUM_TASKS": "2", "SLURM_STEP_NODELIST": "localhost",
                                   "SLURM_JOB_ID": "7", "MASTER_PORT": str(port)})
             for rank in range(2)]
    outputs = [task.communicate(timeout=300) for task in tasks]
    assert [task.returncode for task in tasks] == [0, 0], outputs[0][1][-2000:]
    assert "2 processes" in outputs[0][0]
    one, two = (torch.load(tmp_path / launcher / "run" / "ckpt.pth.tar", weights_only=False)["state_dict"]
                for launcher in ("torchrun", "srun"))
    assert all(torch.equal(one[k], two[k]) for k in one)


def two_nodes(root_log, data_root, tmp_path, kill_at=None):
    """Two torchrun agents on this machine acting as two nodes (c10d rendezvous, gloo, one process each) train
    `--seeds 1,2`; with `kill_at`, under `--max_restarts 1`, the second agent's worker is killed (SIGKILL, as a
    node lost) when the output shows a line starting so after seed 1 is done. Returns both agents' output."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    logs = [tmp_path / f"{root_log.name}-node{n}.log" for n in range(2)]
    agents = []
    for node, log in enumerate(logs):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node_rank", str(node),
               "--nproc_per_node", "1", "--rdzv_backend", "c10d", "--rdzv_endpoint", f"127.0.0.1:{port}",
               "--rdzv_id", f"job-{root_log.name}", "--max_restarts", "1" if kill_at else "0",
               os.path.join(ROOT, "main.py"),
               *TINY_TRAIN, "--root", data_root, "--epochs", "2", "--seeds", "1,2", "--root_log", str(root_log)]
        agents.append(subprocess.Popen(cmd, stdout=open(log, "w"), stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                       env={**os.environ, "OMP_NUM_THREADS": "1"}))
    if kill_at:
        deadline = time.time() + 300
        while not any(re.search(rf"^done:.*\n(.*\n)*{re.escape(kill_at)}", log.read_text(), re.M) for log in logs):
            assert time.time() < deadline and all(a.poll() is None for a in agents)
            time.sleep(0.05)
        (worker,) = subprocess.run(["ps", "-o", "pid=", "--ppid", str(agents[1].pid)], capture_output=True,
                                   text=True).stdout.split()
        os.kill(int(worker), signal.SIGKILL)
    for agent in agents:
        agent.wait(timeout=600)
    text = "".join(log.read_text() for log in logs)
    assert [a.returncode for a in agents] == [0, 0], text[-3000:]
    return text


@pytest.mark.slow
def test_two_agents_as_two_nodes_train_as_one_agent_of_two(tmp_path):
    """Multi-node without a cluster: two torchrun agents (one process each) end bitwise equal to one agent with
    two processes, for both seeds of one command."""
    data_root = str(tmp_path / "data")
    write_cifar(data_root, train_per_class=60, test_per_class=2)  # 240 images: 8 steps per process and epoch
    torchrun(tmp_path / "one-agent", data_root)
    two_nodes(tmp_path / "two-agents", data_root, tmp_path)
    one, two = final_weights(tmp_path / "one-agent"), final_weights(tmp_path / "two-agents")
    assert sorted(two) == [1, 2]
    for seed in (1, 2):
        assert two[seed][0] == 2 and all(torch.equal(one[seed][1][k], two[seed][1][k]) for k in one[seed][1]), seed


@pytest.mark.slow
def test_a_node_lost_under_two_agents_costs_at_most_its_epoch(tmp_path):
    """Two agents as two nodes under --max_restarts 1: a node's worker killed in seed 2's second epoch; both
    agents restart their workers (one may do so without counting a failure), the new group continues seed 2
    from its last checkpoint, and both seeds end bitwise equal to one agent of two processes."""
    data_root = str(tmp_path / "data")
    write_cifar(data_root, train_per_class=60, test_per_class=2)  # 240 images: 8 steps per process and epoch
    torchrun(tmp_path / "one-agent", data_root)
    out = two_nodes(tmp_path / "two-agents", data_root, tmp_path, kill_at="epoch 2/2 step 4/")
    assert "torchrun restart: continuing" in out and "continuing at epoch 2" in out, out[-3000:]
    assert len(os.listdir(tmp_path / "two-agents")) == 2  # no third folder: seed 2 went on in its own
    one, two = final_weights(tmp_path / "one-agent"), final_weights(tmp_path / "two-agents")
    for seed in (1, 2):
        assert two[seed][0] == 2 and all(torch.equal(one[seed][1][k], two[seed][1][k]) for k in one[seed][1]), seed


def test_a_new_group_agrees_on_a_name_no_lost_group_used():
    """The store outlives worker groups: a lost group's hellos and publication are still there. The new group's
    processes, started in any order, agree on one new name and never take the lost group's."""
    import json
    import threading

    from utils.distributed import agreed_name

    store = dist.HashStore()
    store.set("glmc/hello/0", "lost0")
    store.set("glmc/hello/1", "lost1")
    store.set("glmc/leader", json.dumps({"name": "lost", "hellos": ["lost0", "lost1"]}))
    names = {}

    def join(rank):
        names[rank] = agreed_name(store, rank, 2, poll=0.01)

    late_leader = threading.Thread(target=join, args=(0,))
    first = threading.Thread(target=join, args=(1,))
    first.start()
    time.sleep(0.3)  # rank 1 reads the lost group's publication first, and must not take it
    assert 1 not in names
    late_leader.start()
    for thread in (first, late_leader):
        thread.join(timeout=30)
    assert names[0] == names[1] and names[0] != "lost"

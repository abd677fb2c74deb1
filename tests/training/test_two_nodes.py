"""Two "nodes" on this host: two train.py commands started apart, NODE_RANK 0 and 1, MASTER_ADDR 127.0.0.1, one CPU
process each (gloo), the same --run_name. They give the very test/acc of two processes on one node; only node 0
writes the run folder; a node that dies makes the other stop with one line instead of waiting."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
from helpers import train_script
from lightning.fabric.plugins.environments.lightning import find_free_network_port

pytestmark = pytest.mark.slow  # two process groups of training (~40 s)


def node(config: dict, rank: int, port: int, cwd: Path, *flags: str) -> subprocess.Popen:
    env = {**os.environ, "NODE_RANK": str(rank), "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    args = train_script(config, "--trainer.num_nodes", "2", "--trainer.devices", "1", "--trainer.strategy", "ddp",
                        "--run_name", "two-nodes", *flags)  # fmt: skip
    return subprocess.Popen(args, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip


def test_two_nodes_give_the_test_acc_of_two_processes_on_one_node(tiny_config, tmp_path):
    port = find_free_network_port()
    nodes = [node(tiny_config, rank, port, tmp_path, "--seed_everything", "5") for rank in (0, 1)]
    outputs = [n.communicate(timeout=300) for n in nodes]
    assert [n.returncode for n in nodes] == [0, 0], [o[1][-2000:] for o in outputs]
    logs = Path(tiny_config["logs_dir"])
    two_nodes = json.loads((logs / "two-nodes" / "metrics.json").read_text())
    assert "Results" in outputs[0][0] and "Results" not in outputs[1][0], "only node 0 reports"
    assert sorted(p.name for p in logs.iterdir()) == ["two-nodes"], "one run folder, node 0's"

    one_node = subprocess.run(
        train_script(tiny_config, "--trainer.devices", "2", "--trainer.strategy", "ddp", "--run_name", "one-node",
                     "--seed_everything", "5"),  # fmt: skip
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "MASTER_PORT": str(find_free_network_port())},
    )  # fmt: skip
    assert one_node.returncode == 0, one_node.stderr[-2000:]
    one = json.loads((logs / "one-node" / "metrics.json").read_text())
    assert two_nodes["test/acc"] == one["test/acc"] and two_nodes["global_step"] == one["global_step"]
    assert two_nodes["test/loss"] == pytest.approx(one["test/loss"], rel=1e-6)


def test_a_node_that_dies_stops_the_other_in_one_line(tiny_config, tmp_path):
    port = find_free_network_port()
    long = ("--trainer.max_epochs", "500", "--seed_everything", "5")
    nodes = [node(tiny_config, rank, port, tmp_path, *long) for rank in (0, 1)]
    last = Path(tiny_config["logs_dir"]) / "two-nodes" / "checkpoints" / "last.ckpt"
    deadline = time.monotonic() + 180
    while not last.exists():
        assert all(n.poll() is None for n in nodes) and time.monotonic() < deadline, nodes[0].communicate()
        time.sleep(0.2)
    os.killpg(nodes[1].pid, signal.SIGKILL)
    start = time.monotonic()
    out, err = nodes[0].communicate(timeout=120)
    assert time.monotonic() - start < 60, "it stopped, not waited for the lost node"
    assert nodes[0].returncode == 2, err[-2000:]
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith("error:") and "lost" in last_line and "--ckpt_path last" in last_line, err[-2000:]
    assert "Traceback" not in err

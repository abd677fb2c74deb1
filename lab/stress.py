"""A stress run of the crash-safety claims, by hand (``python scripts/stress.py``), not in CI.

Each trial runs ``scripts/train.py`` as a user would, on a small generated dataset, and does something
unkind to it: ``kill -9`` at a random moment (some land inside checkpoint and config writes) and resumes
until the run is done; two runs started at the same moment; a resume of a run that is still training;
a log or cache folder on a tiny full tmpfs (where this machine lets us mount one); a run folder whose
config.yaml names code; a kill in epoch 0, before any validation; a YAML bomb; a copied run folder trained
further; a kill while decoding on worker processes; and the server: kill -TERM of serve.py, and kill -9 of its
inference worker while it holds a request. It prints faults tried,
survived (the run ends with its results, or the refusal is one line with exit code 2) and identical (the
resumed run's final weights equal those of the same run left alone).
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
import yaml

from catdog_lightning.data.synthetic import generate_dataset

ROOT = Path(__file__).resolve().parents[1]
EPOCHS = 6


def _command(data: Path, logs: Path, *flags: str) -> list[str]:
    return [
        sys.executable, str(ROOT / "scripts" / "train.py"), "--data.data_dir", str(data), "--data.image_size", "16",
        "--data.cache_dir", str(logs.parent / "cache"), "--model.net.init_args.hidden_dims", "[32, 16]",
        "--data.augment", "true", "--model.net.init_args.dropout", "0.2", "--trainer.deterministic", "true",
        "--trainer.accelerator", "cpu", "--trainer.max_epochs", str(EPOCHS), "--seed_everything", "5",
        "--logs_dir", str(logs), *flags,
    ]  # fmt: skip


def _train(data: Path, logs: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(data, logs, *flags), capture_output=True, text=True)


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _one_line_refusal(done: subprocess.CompletedProcess) -> bool:
    return done.returncode == 2 and done.stderr.strip().count("\n") == 0 and "Traceback" not in done.stderr


def kill_and_resume(data: Path, work: Path, reference: dict, rng: random.Random, kills: int) -> tuple[bool, bool]:
    logs = work / "logs"
    flags = ("--run_name", "r")
    for _ in range(kills):
        resume = ("--ckpt_path", "last") if (logs / "r" / "checkpoints" / "last.ckpt").exists() else ()
        proc = subprocess.Popen(
            _command(data, logs, *flags, *resume), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        time.sleep(rng.uniform(2.0, 9.0))
        proc.kill()
        proc.wait()
    resume = ("--ckpt_path", "last") if (logs / "r" / "checkpoints" / "last.ckpt").exists() else ()
    done = subprocess.run(_command(data, logs, *flags, *resume), capture_output=True, text=True)
    survived = done.returncode == 0 and "Results" in done.stdout
    return survived, survived and _same(_weights(logs / "r"), reference)


def concurrent_starts(data: Path, work: Path, reference: dict) -> tuple[bool, bool]:
    logs = work / "logs"
    procs = [subprocess.Popen(_command(data, logs), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for _ in range(2)]  # fmt: skip
    for proc in procs:
        proc.wait()
    runs = sorted(p.name for p in logs.iterdir() if (p / "metrics.json").is_file()) if logs.is_dir() else []
    survived = all(p.returncode == 0 for p in procs) and runs == ["version_0", "version_1"]
    return survived, survived and all(_same(_weights(logs / run), reference) for run in runs)


def resume_of_a_live_run(data: Path, work: Path, reference: dict) -> tuple[bool, bool]:
    logs = work / "logs"
    # Long enough to be still training when the second process has started up.
    long_run = [*_command(data, logs, "--run_name", "live"), "--trainer.max_epochs", str(EPOCHS * 40)]
    first = subprocess.Popen(long_run, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not (logs / "live" / "checkpoints" / "last.ckpt").exists() and first.poll() is None:
        time.sleep(0.2)
    second = subprocess.run(
        _command(data, logs, "--run_name", "live", "--ckpt_path", "last"), capture_output=True, text=True
    )
    first.wait()
    survived = _one_line_refusal(second) and "in use by process" in second.stderr and first.returncode == 0
    return survived, survived  # (a longer run than the reference: nothing to compare its weights with)


def full_disk(data: Path, work: Path, reference: dict) -> tuple[bool, bool] | None:
    mount = work / "tiny"
    mount.mkdir(parents=True)
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True).returncode:
        return None  # not allowed here: skipped
    try:
        logs_full = subprocess.run(
            [*_command(data, mount / "logs"), "--data.cache_dir", str(work / "cache")], capture_output=True, text=True
        )
        cache_full = subprocess.run(
            [*_command(data, work / "logs"), "--data.cache_dir", str(mount / "cache")], capture_output=True, text=True
        )
        survived = _one_line_refusal(logs_full) and cache_full.returncode == 0
        return survived, survived and _same(_weights(work / "logs" / "version_0"), reference)
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


def code_in_a_run_folder(data: Path, work: Path, reference: dict) -> tuple[bool, bool]:
    """A finished run's config.yaml edited to name os.system: resuming it must refuse, run nothing, change nothing."""
    logs, mark = work / "logs", work / "ran"
    _train(data, logs, "--run_name", "r", "--trainer.max_epochs", "2")
    config = logs / "r" / "config.yaml"
    saved = yaml.safe_load(config.read_text())
    saved["trainer"]["callbacks"] = [{"class_path": "os.system", "init_args": {"command": f"touch {mark}"}}]
    config.write_text(yaml.safe_dump(saved))
    before = (logs / "r" / "checkpoints" / "last.ckpt").read_bytes()
    done = _train(data, logs, "--run_name", "r", "--ckpt_path", "last")
    survived = _one_line_refusal(done) and "os.system" in done.stderr and not mark.exists()
    return survived, survived and (logs / "r" / "checkpoints" / "last.ckpt").read_bytes() == before


def killed_in_epoch_0(data: Path, work: Path, reference: dict) -> tuple[bool, bool]:
    """kill -9 right after the first step's checkpoint, before any validation, then resume to the end."""
    logs = work / "logs"
    last = logs / "r" / "checkpoints" / "last.ckpt"
    proc = subprocess.Popen(_command(data, logs, "--run_name", "r", "--checkpoint_every_n_steps", "1"),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    while not last.exists() and proc.poll() is None:
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    in_epoch_0 = last.exists() and int(torch.load(last, weights_only=True)["epoch"]) == 0
    done = _train(data, logs, "--run_name", "r", "--ckpt_path", "last")
    survived = in_epoch_0 and done.returncode == 0 and "Results" in done.stdout
    return survived, survived and _same(_weights(logs / "r"), reference)


def yaml_bomb(data: Path, work: Path, reference: dict) -> tuple[bool, bool]:
    """A 'billion laughs' --config: one line and exit 2 at once, instead of a process that never ends."""
    work.mkdir(parents=True)
    bomb = work / "bomb.yaml"
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    lines += [f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]" for p, n in zip("abcdefgh", "bcdefghi", strict=True)]
    bomb.write_text("\n".join(lines).replace("a: &a", "data: &a", 1) + "\n")
    try:
        done = subprocess.run(_command(data, work / "logs", "--config", str(bomb)), capture_output=True, text=True,
                              timeout=60)  # fmt: skip
    except subprocess.TimeoutExpired:
        return False, False
    survived = _one_line_refusal(done) and "billion laughs" in done.stderr
    return survived, survived


def copied_run_folder(data: Path, work: Path, reference: dict) -> tuple[bool, bool]:
    """A run folder copied elsewhere, then both trained further: the copy keeps its real best, as the original."""
    first, copy = work / "a", work / "b"
    _train(data, first, "--run_name", "r", "--trainer.max_epochs", str(EPOCHS // 2))
    shutil.copytree(first, copy)
    done = [_train(data, logs, "--run_name", "r", "--ckpt_path", "last") for logs in (first, copy)]
    survived = all(d.returncode == 0 for d in done)
    best = [torch.load(logs / "r" / "checkpoints" / "best.ckpt", weights_only=True) for logs in (first, copy)]
    same = best[0]["epoch"] == best[1]["epoch"] and _same(best[0]["state_dict"], best[1]["state_dict"])
    return survived, survived and same and _same(_weights(copy / "r"), reference)


SLOW_DECODE = """
import sys, time
import catdog_lightning.data.decode as decode
real = decode.decode_image
decode.decode_image = lambda *args, **kwargs: (time.sleep(0.05), real(*args, **kwargs))[1]
print("decoding", flush=True)
decode.decode_many(sys.argv[1:], 16, workers=2)
"""


def killed_while_decoding(data: Path, work: Path, reference: dict) -> tuple[bool, bool]:
    """kill -9 of a process in the middle of decoding on 2 workers: the workers end too, and free its stdout."""
    paths = [str(p) for p in sorted(data.rglob("*.jpg"))] * 5
    proc = subprocess.Popen([sys.executable, "-c", SLOW_DECODE, *paths], stdout=subprocess.PIPE, text=True)
    proc.stdout.readline()
    time.sleep(1.5)
    workers = descendants(proc.pid)
    proc.kill()
    proc.wait()
    eof = proc.stdout.read() == ""
    time.sleep(3)
    alive = [w for w in workers if running(w)]
    survived = eof and len(workers) == 2 and not alive
    return survived, survived


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        try:
            kids = [
                int(c) for t in Path(f"/proc/{current}/task").iterdir() for c in (t / "children").read_text().split()
            ]
        except OSError:
            continue
        found += kids
        todo += kids
    return found


def server_sigterm(ckpt: Path) -> tuple[bool, bool]:
    """kill -TERM of serve.py's main process alone (what systemd, Docker and kill send): every process of its tree
    ends, the port is free, exit code 0, one line."""
    from .loadtest import free_port, start_server

    port = free_port()
    server = start_server(str(ckpt), port, [])
    tree = descendants(server.pid)
    server.terminate()
    try:
        server.wait(timeout=30)
    except subprocess.TimeoutExpired:
        server.kill()
    time.sleep(1)
    with socket.socket() as sock:
        free = sock.connect_ex(("127.0.0.1", port)) != 0
    said = server.stderr.read()
    survived = server.returncode == 0 and free and not any(running(p) for p in tree) and "Traceback" not in said
    return survived, survived


def worker_killed_mid_request(ckpt: Path, photo: Path) -> tuple[bool, bool]:
    """kill -9 of the inference worker while it holds a request: that request gets a 503 at once, /health is 503,
    and the restarted worker answers the next one."""
    import httpx

    from .loadtest import free_port, start_server

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = start_server(str(ckpt), port, ["--batch_timeout", "6", "--max_batch_size", "8"])
    try:
        (worker,) = [p for p in descendants(server.pid) if b"multiprocessing.spawn" in cmdline(p)]
        files = {"image": (photo.name, photo.read_bytes(), "image/jpeg")}
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(httpx.post, f"{url}/predict", files=files, timeout=60)
            time.sleep(1.5)  # the worker holds it, filling its batch
            killed = time.monotonic()
            os.kill(worker, signal.SIGKILL)
            health = health_within(url, 1.0)
            answer = held.result()
        at_once = answer.status_code == 503 and time.monotonic() - killed < 3 and 503 in health
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if httpx.post(f"{url}/predict", files=files, timeout=60).status_code == 200:
                return at_once, at_once
            time.sleep(0.5)
        return False, False
    finally:
        server.terminate()
        server.wait(timeout=30)


def health_within(url: str, seconds: float) -> list[int]:
    """/health's answers over ``seconds``, every 0.05 s (the server's monitor looks every 0.1 s)."""
    import httpx

    answers, stop = [], time.monotonic() + seconds
    while time.monotonic() < stop:
        answers.append(httpx.get(f"{url}/health", timeout=5).status_code)
        time.sleep(0.05)
    return answers


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"  # a zombie has ended
    except OSError:
        return False


def run_stress(args: dict) -> None:
    """scripts/stress.py: ``--trials`` kill -9 trials plus one of each other fault; prints the tally."""
    rng = random.Random(args["seed"])
    base = Path(tempfile.mkdtemp(prefix="catdog-stress-"))
    data = generate_dataset(base / "data", n_train=300, n_test=60, seed=1)
    reference_run = base / "reference"
    subprocess.run(_command(data, reference_run / "logs", "--run_name", "r"), check=True, capture_output=True)
    reference = _weights(reference_run / "logs" / "r")
    tally = {"tried": 0, "survived": 0, "identical": 0}

    def record(name: str, outcome: tuple[bool, bool] | None) -> None:
        if outcome is None:
            print(f"  {name}: skipped (not possible on this machine)", flush=True)
            return
        survived, identical = outcome
        tally["tried"] += 1
        tally["survived"] += survived
        tally["identical"] += identical
        print(f"  {name}: {'survived' if survived else 'FAILED'}{', identical' if identical else ''}", flush=True)

    for trial in range(args["trials"]):
        work = base / f"kill-{trial}"
        record(f"kill -9 x{1 + trial % 3}, then resume", kill_and_resume(data, work, reference, rng, 1 + trial % 3))
    record("two runs started together", concurrent_starts(data, base / "concurrent", reference))
    record("resume of a live run", resume_of_a_live_run(data, base / "live", reference))
    record("full disk (tmpfs)", full_disk(data, base / "disk", reference))
    record("code named in a run's config.yaml", code_in_a_run_folder(data, base / "code", reference))
    record("kill -9 in epoch 0, then resume", killed_in_epoch_0(data, base / "epoch0", reference))
    record("YAML bomb in --config", yaml_bomb(data, base / "bomb", reference))
    record("a copied run folder, trained further", copied_run_folder(data, base / "copied", reference))
    record("kill -9 while decoding on 2 workers", killed_while_decoding(data, base / "decoding", reference))
    ckpt = reference_run / "logs" / "r" / "checkpoints" / "last.ckpt"
    record("kill -TERM of serve.py", server_sigterm(ckpt))
    record("kill -9 of serve.py's worker mid-request", worker_killed_mid_request(ckpt, next(data.rglob("*.jpg"))))
    print(f"faults tried {tally['tried']} / survived {tally['survived']} / identical {tally['identical']}")
    shutil.rmtree(base, ignore_errors=True)

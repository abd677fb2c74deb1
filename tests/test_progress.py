"""Progress in a piped log: a short line every tenth (no sooner than a few seconds apart) and at least every half
minute, no carriage returns; a real training run piped to a file shows its decoding and epochs that way."""

import io
import subprocess

from helpers import ROOT, train_script

from catdog_lightning.progress import EVERY_S, LogLines, duration


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def lines_of(total: int, seconds_per_step: float, **kwargs) -> list[str]:
    clock, out = Clock(), io.StringIO()
    with LogLines(total, "backbone features", stream=out, clock=clock, **kwargs) as bar:
        for _ in range(total):
            clock.now += seconds_per_step
            bar.update(1)
    return out.getvalue().splitlines()


def test_a_slow_step_speaks_every_half_minute_with_count_rate_and_time_left():
    lines = lines_of(100, 2.0, tenths=False)  # 200 s in all
    assert len(lines) == 200 // EVERY_S + 1  # one every 30 s, then the closing line
    assert lines[0] == "backbone features: 15/100 images (15%), 0.5/s, 2m50s left"
    assert lines[-1] == "backbone features: 100 images in 3m20s"
    assert all("\r" not in line for line in lines)


def test_tenths_are_told_but_never_closer_than_a_few_seconds():
    assert len(lines_of(1000, 0.1)) == 9 + 1  # 100 s: every tenth (10 s apart), then the closing line
    assert lines_of(1000, 0.001) == []  # done in a second: nothing to say


def test_durations_read_as_words():
    assert [duration(s) for s in (4.4, 65, 3600 + 125)] == ["4 s", "1m05s", "1h02m"]


def test_a_piped_training_run_logs_lines_not_carriage_returns(tiny_config, tmp_path):
    done = subprocess.run(
        train_script(tiny_config, "--trainer.max_epochs", "2", "--trainer.enable_progress_bar", "true"),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    log = done.stdout + done.stderr
    assert "\r" not in log
    epochs = [line for line in done.stdout.splitlines() if line.startswith("Epoch ")]
    assert len(epochs) == 2 and all("train/loss" in line for line in epochs), done.stdout


def test_the_lines_come_from_one_module():
    """decode.py and features.py use the shared progress, not tqdm of their own (which is silent in a pipe)."""
    for path in ("data/decode.py", "models/features.py"):
        source = (ROOT / "catdog_lightning" / path).read_text()
        assert "from ..progress import progress" in source and "tqdm" not in source


def test_the_heartbeat_speaks_while_one_step_runs_long_and_stops_when_closed(monkeypatch):
    import time

    from catdog_lightning import progress

    monkeypatch.setattr(progress, "EVERY_S", 0.2)
    out = io.StringIO()
    lines = LogLines(10, "backbone features", stream=out, heartbeat=True)
    lines.update(1)
    time.sleep(1.3)  # one step that takes long: no update comes, the heartbeat speaks anyway
    lines.close(final=False)
    said = out.getvalue().splitlines()
    assert len(said) >= 2 and all(line.startswith("backbone features: 1/10 images (10%)") for line in said)
    time.sleep(0.5)
    assert out.getvalue().splitlines() == said  # closed: silent

"""scripts/growth.py: the generated folders, the growth arithmetic, its table and plot, and one real run."""

import os
import subprocess
import sys

import pytest
from helpers import ROOT

from lab import growth


def test_smaller_folders_are_hard_links_to_the_first_pictures_of_the_largest(tmp_path):
    folders = growth.make_folders(tmp_path, (20, 40))
    small, large = folders[20], folders[40]
    for label in ("cat", "dog"):
        names = sorted(p.name for p in (small / "train" / label).iterdir())
        assert len(names) == 10 and names == sorted(p.name for p in (large / "train" / label).iterdir())[:10]
        first = small / "train" / label / names[0]
        assert os.path.samefile(first, large / "train" / label / names[0])  # linked, not drawn again
        assert len(list((small / "test" / label).iterdir())) == growth.TEST_IMAGES // 2
    stamp = (large / "manifest.json").stat().st_mtime_ns
    assert growth.make_folders(tmp_path, (20, 40)) == folders  # made once, then reused
    assert (large / "manifest.json").stat().st_mtime_ns == stamp
    (large / "manifest.json").write_text('{"n_train": 40, "n_test": 1}')  # another generation: made afresh
    again = growth.make_folders(tmp_path, (20, 40))
    first = sorted((again[20] / "train" / "cat").iterdir())[0]
    assert os.path.samefile(first, again[40] / "train" / "cat" / first.name)  # the small one re-linked to it


def _result(real=None):
    def costs(n, build, start, epoch, rss):
        return {"images": n, "build_s": build, "build_peak_rss_mb": rss, "start_s": start, "epoch_s": epoch,
                "peak_rss_mb": rss}  # fmt: skip

    generated = [costs(1000, 2.0, 0.5, 1.0, 800), costs(10000, 20.0, 0.5, 10.0, 1000)]
    return {"generated": generated, "real": real, "real_dir": "/photos/catdog-a"}


def test_growth_exponent_is_one_for_linear_costs_and_zero_for_flat_ones():
    small, large = _result()["generated"]
    assert growth.exponent(small, large, "build_s") == pytest.approx(1.0)
    assert growth.exponent(small, large, "start_s") == pytest.approx(0.0)
    assert growth.exponent({"images": 1, "x": 1.0}, {"images": 10, "x": 100.0}, "x") == pytest.approx(2.0)


def test_growth_table_and_plot():
    real = {
        "images": 2000,
        "build_s": 9.0,
        "build_peak_rss_mb": 900,
        "start_s": 0.6,
        "epoch_s": 2.0,
        "peak_rss_mb": 850,
    }
    result = _result(real)
    table = growth.format_growth(result)
    assert "| generated 10,000" in table and "| catdog-a 2,000 (photos)" in table
    assert "| growth exponent 1,000 -> 10,000 | 1.00" in table and table.count("growth exponent") == 2
    assert "second run's start at 10,000 images: 0.50 s" in table
    image = growth.plot_growth(result)
    assert image.size == (720, 480) and len(image.getcolors(maxcolors=1 << 24)) > 3  # drawn, not blank


def test_growth_refuses_a_single_size(capsys):
    from lab.cli import growth_main

    assert growth_main(["--sizes", "[2000]"]) == 2
    assert "--sizes needs at least two sizes" in capsys.readouterr().err


@pytest.mark.slow
def test_growth_script_measures_two_small_folders(tmp_path):
    script = ROOT / "scripts" / "growth.py"
    out = subprocess.run(
        [sys.executable, str(script), "--sizes", "[100,200]", "--work_dir", str(tmp_path / "w"), "--out_dir",
         str(tmp_path / "docs")],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| generated 200" in out.stdout
    assert (tmp_path / "docs" / "growth.json").is_file() and (tmp_path / "docs" / "growth.png").is_file()


def test_each_cost_is_the_lower_of_the_rounds_readings():
    first = {"images": 100, "build_s": 2.0, "epoch_s": 1.0}
    second = {"images": 100, "build_s": 1.5, "epoch_s": 1.2}
    assert growth.lowest([first, second]) == {"images": 100, "build_s": 1.5, "epoch_s": 1.0}

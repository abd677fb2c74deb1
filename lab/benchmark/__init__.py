"""The benchmark: phases.py (what is timed, each in a fresh process), run.py (which phases, side by side),
tables.py (medians and ratios as Markdown)."""

from .run import run_benchmark, run_benchmark_cli, run_phase
from .tables import markdown_table

__all__ = ["markdown_table", "run_benchmark", "run_benchmark_cli", "run_phase"]

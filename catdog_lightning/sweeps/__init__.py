"""Many runs, not one: hyperparameter sweeps on Optuna. search.py reads a search-space file, study.py runs the
trials (each an ordinary train.py run) on an Optuna study, report.py writes what the sweep found."""

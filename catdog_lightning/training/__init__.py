"""Training: ``train(config) -> metrics`` joins data and models under Lightning's Trainer.

fit.py runs a whole training; trainer.py builds the Trainer (loggers, checkpoints, callbacks, HPARAMS);
resume.py says which run continues with which settings; callbacks.py keeps runs reproducible and stoppable;
progress.py and tensorboard.py are what people watch (drawing.py draws the pictures); stages.py runs a
trained checkpoint through validate, test or predict; allocator.py keeps freed memory for the next step (set by
the command line only).
"""

from .fit import train

__all__ = ["train"]

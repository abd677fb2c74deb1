"""catdog-lightning: train, watch, resume and use a cat-vs-dog photo classifier with PyTorch Lightning.

The floors, each importing only those below it: ``errors`` and ``numpy_net``; ``storage`` (files on disk);
``data`` and ``models`` (side by side, never importing each other); ``training``; ``inference``; ``cli`` (the
product's commands). tests/test_layers.py keeps it so. The lab (measurements and the lesson's programs) lives
in the checkout's ``lab/``, beside the package: it writes docs/ and runs scripts/.
"""

__version__ = "0.1.0"


def load_classifier(ckpt_path=None, device: str = "cpu", logs_dir="lightning_logs"):
    """``load_classifier(ckpt).predict(["a.jpg", ...])``; see :mod:`catdog_lightning.inference.predictor`.

    Imported lazily so ``import catdog_lightning`` stays light.
    """
    from .inference import load_classifier as _load

    return _load(ckpt_path, device, logs_dir)


def train(config: dict, callbacks=None) -> dict:
    """``train(config) -> metrics``; see :mod:`catdog_lightning.training.fit` (imported lazily, as above)."""
    from .training import train as _train

    return _train(config, callbacks)


__all__ = ["__version__", "load_classifier", "train"]

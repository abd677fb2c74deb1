"""catdog-lightning: train, watch, resume and use a cat-vs-dog photo classifier with PyTorch Lightning."""

__version__ = "0.1.0"


def load_classifier(ckpt_path=None, device: str = "cpu"):
    """``load_classifier(ckpt).predict(["a.jpg", ...])``; see :mod:`catdog_lightning.inference`.

    Imported lazily so ``import catdog_lightning`` stays light (the DataModule's decode workers import it).
    """
    from .inference import load_classifier as _load

    return _load(ckpt_path, device)


__all__ = ["__version__", "load_classifier"]

"""Using a trained model: predict (predictor.py, with predictions.py writing them), evaluate, export."""

from .predictions import Prediction
from .predictor import Predictor, load_classifier

__all__ = ["Prediction", "Predictor", "load_classifier"]

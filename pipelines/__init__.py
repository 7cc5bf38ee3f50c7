"""Keras pipelines for five applications of deep learning, over one shared core.

Importing this package is cheap: TensorFlow, Keras and MLflow are imported by the
modules that need them, so `python -m pipelines --help` and input errors are instant.
"""

__version__ = "0.1.0"

"""Prunelab's defense library: Fine-Pruning of backdoored Keras classifiers (BadNets).

Plain Python (numpy, h5py, Keras); it never imports Django or Celery, so the command line
(`python -m defenses`), the Celery workers and the tests all call the same functions.
"""

import os

# TensorFlow's C++ start-up chatter (CUDA probing, oneDNN notices) drowns the CLI's output;
# real failures still arrive as Python exceptions.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

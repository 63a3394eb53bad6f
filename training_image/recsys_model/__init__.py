"""Session-based next-item recommender: the `train` job and the `serve` HTTP server."""

import os

# TensorFlow's C++ start-up chatter drowns the job's own progress lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__version__ = "1.0.0"

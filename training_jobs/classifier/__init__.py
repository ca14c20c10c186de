"""Image classifier shared by train.py and inference.py (one model definition for both)."""

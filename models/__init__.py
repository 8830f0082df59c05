"""Tokenizers, chat templates and checkpoints: the test models and the bundled tiny reasoner."""

from pathlib import Path

# The checkpoint `splitmind up` serves when no --model is given (models/tiny_reasoner/build.py).
BUNDLED_MODEL = Path(__file__).resolve().parent / "tiny-reasoner"

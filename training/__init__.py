"""Fine-tuning and evaluation of sentiq's sentiment model (``python -m training``).

``train`` fine-tunes a base model (TinyBERT by default, ``bundled`` MiniLM offline) on labelled
reviews with the Hugging Face ``Trainer`` and writes a model folder that the workers serve;
``evaluate`` scores a model folder on any labelled file. See :mod:`training.cli`.
"""

"""Named bundles of training settings (``--preset``); explicitly given flags override them."""

from __future__ import annotations

from typing import Any

from sentiq.errors import ConfigurationError

#: ``quick``: a first model in about 5 minutes on a 2-core CPU from ``--base-model bundled``
#: (measured: see the training section of the README / the task notes). Short inputs and a
#: single epoch over a couple of thousand reviews; the higher learning rate makes up for the
#: few optimiser steps that gives.
PRESETS: dict[str, dict[str, Any]] = {
    "quick": {
        "max_train_samples": 2000,
        "max_eval_samples": 300,
        "max_length": 128,
        "epochs": 1.0,
        "learning_rate": 5e-5,
    },
}


def apply_preset(name: str | None, flags: dict[str, Any]) -> dict[str, Any]:
    """Training setting overrides: the preset's values, then every flag that was given (not None)."""
    if name is None:
        return dict(flags)
    if name not in PRESETS:
        raise ConfigurationError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
    given = {key: value for key, value in flags.items() if value is not None}
    return {**PRESETS[name], **given}

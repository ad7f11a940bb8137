"""What a fine-tuning checkpoint must share with the run that resumes it (end to end in
test_finetune.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepfeat.backbones.finetuned import MARKER
from deepfeat.errors import ConfigError
from deepfeat.training.resume import check_same_data, check_same_settings

RUN = {"lr": 0.01, "epochs": 2, "step_size": 1}


def test_settings_may_differ_in_epochs_only():
    check_same_settings(Path("last.pt"), RUN, {**RUN, "epochs": 5})
    with pytest.raises(ConfigError, match=r"other settings \(lr\); use another"):
        check_same_settings(Path("last.pt"), RUN, {**RUN, "lr": 0.1})
    hint = r"\(step_size\); to train it longer, leave step_size out or give 1"
    with pytest.raises(ConfigError, match=hint):
        check_same_settings(Path("last.pt"), RUN, {**RUN, "epochs": 4, "step_size": 2})


def test_data_must_be_the_same_items_labels_and_split():
    data = {"name": "a", "fingerprint": "f", "split": "s", "classes": ["x", "y"]}
    check_same_data(Path("last.pt"), {"data": data}, data)
    for key in ("fingerprint", "split"):
        with pytest.raises(ConfigError, match="trained on other data"):
            check_same_data(Path("last.pt"), {"data": {**data, key: "other"}}, data)
    # a checkpoint from before data were recorded: its classes decide
    check_same_data(Path("last.pt"), {MARKER: {"classes": ["x", "y"]}}, data)
    with pytest.raises(ConfigError, match=r"classes \['x', 'z'\]"):
        check_same_data(Path("last.pt"), {MARKER: {"classes": ["x", "z"]}}, data)

"""What a fine-tuning checkpoint must share with the run that resumes it: its settings (the number
of epochs aside: a finished run is extended) and its data (items, labels and split)."""

from __future__ import annotations

from pathlib import Path

from deepfeat.backbones.finetuned import MARKER
from deepfeat.errors import ConfigError


def check_same_settings(path: Path, saved: dict, now: dict) -> None:
    """A ConfigError naming the settings in which the checkpoint at ``path`` differs from this run's;
    the number of epochs may differ (a finished run is extended, or an interrupted one resumed)."""
    differ = sorted(k for k in saved.keys() | now.keys() if k != "epochs" and saved.get(k) != now.get(k))
    if differ:
        hint = ""
        if differ == ["step_size"]:  # a step given now that differs from the run's
            hint = f"; to train it longer, leave step_size out or give {saved.get('step_size')} (--step-size)"
        raise ConfigError(
            f"{path} was written with other settings ({', '.join(differ)}){hint}; use another output "
            "folder or the same settings"
        )


def check_same_data(path: Path, meta: dict, data: dict) -> None:
    """A ConfigError when the checkpoint at ``path`` was trained on other data than ``data`` (its
    items, labels or train/validation split; a checkpoint from before data were recorded: its
    classes)."""
    saved = meta.get("data")
    if saved is None:
        classes = (meta.get(MARKER) or {}).get("classes")
        same = classes is None or list(classes) == data["classes"]
        what = f"classes {classes}"
    else:
        same = saved.get("fingerprint") == data["fingerprint"] and saved.get("split") == data["split"]
        what = f"{saved.get('name')!r}, another fingerprint or split"
    if not same:
        raise ConfigError(
            f"{path} was trained on other data ({what}, not {data['name']!r}); use another output "
            "folder or the same data"
        )

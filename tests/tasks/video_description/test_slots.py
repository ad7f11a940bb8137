"""Slot predictions: the file layout (labels or probabilities), the three inputs of Figure 4.5, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from deepfeat.errors import DataError
from deepfeat.tasks.video_description import read_slots, slots_from_dict

FILE = {
    "slots": {"verb": ["cut", "peel", "wash"], "object": ["carrot", "onion"]},
    "videos": {
        "v1.avi": {"verb": [0.2, 0.7, 0.1], "object": "onion"},
        "v2.avi": {"verb": "cut", "object": [0.5, 0.5]},
    },
}


def test_labels_and_probabilities_give_the_three_inputs():
    preds = slots_from_dict(FILE)
    assert preds.sizes == [3, 2]
    np.testing.assert_allclose(preds.probs["verb"], [[0.2, 0.7, 0.1], [1, 0, 0]], atol=1e-6)
    np.testing.assert_array_equal(preds.labels(), [[1, 1], [0, 0]])  # a tie goes to the first value
    np.testing.assert_array_equal(preds.tokens(), [[1, 4], [0, 3]])  # object tokens follow the verbs
    np.testing.assert_array_equal(preds.vectors("max"), [[0, 1, 0, 0, 1], [1, 0, 0, 1, 0]])
    np.testing.assert_allclose(preds.vectors("prob"), [[0.2, 0.7, 0.1, 0, 1], [1, 0, 0, 0.5, 0.5]], atol=1e-6)
    assert preds.label_names(0) == {"verb": "peel", "object": "onion"}


def test_round_trip_and_selection(tmp_path):
    preds = slots_from_dict(FILE)
    preds.write(tmp_path / "slots.json")
    back = read_slots(tmp_path)  # a folder: its slots.json
    assert back.ids == preds.ids and back.slots == preds.slots
    sub = back.select(["v2.avi"])
    np.testing.assert_allclose(sub.probs["object"], [[0.5, 0.5]])
    with pytest.raises(DataError, match=r"1 videos have no slot prediction.*'v3\.avi'"):
        back.select(["v2.avi", "v3.avi"])


@pytest.mark.parametrize(
    "entry, match",
    [
        ({"verb": "fry", "object": "onion"}, "'fry' is not one of"),
        ({"verb": [0.5, 0.5], "object": "onion"}, "give a label or 3 probabilities"),
        ({"verb": [0.5, 0.4, 0.4], "object": "onion"}, "summing to 1"),
        ({"verb": "cut"}, "no prediction for slot 'object'"),
    ],
)
def test_bad_entries_are_named(entry, match):
    data = json.loads(json.dumps(FILE))
    data["videos"]["v1.avi"] = entry
    with pytest.raises(DataError, match=match):
        slots_from_dict(data)


def test_unreadable_file(tmp_path):
    (tmp_path / "s.json").write_text("{not json")
    with pytest.raises(DataError, match="not a readable JSON"):
        read_slots(tmp_path / "s.json")
    with pytest.raises(DataError, match="not found"):
        read_slots(tmp_path / "none.json")

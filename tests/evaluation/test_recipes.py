"""Feature recipes' arguments (deepfeat.evaluation.recipes)."""

from __future__ import annotations

import numpy as np
import pytest

from deepfeat.errors import ConfigError
from deepfeat.evaluation.recipes import InteractiveRecipe


def test_interactive_norms_one_or_several_of_any_integer_type():
    assert InteractiveRecipe(norms=2).norms == [2]
    assert InteractiveRecipe(norms=np.int64(1)).norms == [1]  # a NumPy integer is one norm, not a list
    assert InteractiveRecipe(norms=[np.int64(1), 2]).norms == [1, 2]
    with pytest.raises(ConfigError, match="score norm p"):
        InteractiveRecipe(norms=3)
    with pytest.raises(ConfigError, match="names no score norm"):
        InteractiveRecipe(norms=[])

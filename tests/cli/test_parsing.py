from __future__ import annotations

import pytest

from deepfeat.cli.parsing import ints, names, protocol
from deepfeat.errors import ConfigError
from deepfeat.evaluation.protocols import FixedSplit


def test_protocol_spellings():
    assert protocol("kshot:5").k == 5
    assert isinstance(protocol("fixed"), FixedSplit)
    assert protocol("random:0.2").test_size == 0.2
    da = protocol("da:all:2")
    assert da.k_source is None and da.k_target == 2
    assert protocol("da:office31").k_source == {"amazon": 20, "webcam": 8, "dslr": 8}
    with pytest.raises(ConfigError, match="valid: kshot:K, fixed"):
        protocol("loo")
    with pytest.raises(ConfigError, match=r"K \(training images per class\) must be a number, got 'many'"):
        protocol("kshot:many")


def test_protocol_messages_name_the_option():
    with pytest.raises(ConfigError, match="--splits must be at least 1, got 0"):
        protocol("kshot:2", n_splits=0)
    with pytest.raises(
        ConfigError, match="random:FRACTION holds out a fraction of the images, between 0 and 1"
    ):
        protocol("random:1.5")
    # the fixed protocol has one split: --splits was ignored silently
    with pytest.raises(ConfigError, match="--protocol fixed has one split"):
        protocol("fixed", n_splits=3)
    assert isinstance(protocol("fixed", n_splits=1), FixedSplit)
    assert protocol("kshot:2").n_splits == 5 and protocol("kshot:2", default_splits=3).n_splits == 3


def test_comma_lists():
    assert names(" a, b ,,c", "--layers") == ["a", "b", "c"]
    with pytest.raises(ConfigError, match="--layers names nothing"):
        names(" , ", "--layers")
    assert ints("224,320", "--scales", minimum=32) == [224, 320]
    with pytest.raises(ConfigError, match="--scales takes comma-separated whole numbers"):
        ints("big", "--scales")

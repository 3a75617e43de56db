import pytest

from zsc_server.batching_policy import CPU_BUCKETS
from zsc_server.settings import ScoringMode, ScoringSettings, sequence_buckets


def test_buckets_end_at_max_length():
    assert sequence_buckets(128) == (16, 32, 64, 128)
    assert sequence_buckets(100) == (16, 32, 64, 100)
    assert sequence_buckets(512) == (16, 32, 64, 128, 256, 512)


def test_round_trip_through_model_config_parameters():
    settings = ScoringSettings(mode=ScoringMode.EMBEDDING, max_length=96, default_template="关于{}",
                               entailment_index=2, contradiction_index=0, max_labels=10, max_text_bytes=99)
    config = {"parameters": {k: {"string_value": v} for k, v in settings.to_parameters().items()}}
    assert ScoringSettings.from_model_config(config) == settings


@pytest.mark.parametrize("kwargs", [
    dict(default_template="no braces"), dict(entailment_index=1, contradiction_index=1),
    dict(max_length=64, buckets=(16, 32)), dict(max_labels=0),
])
def test_invalid_settings(kwargs):
    with pytest.raises(ValueError):
        ScoringSettings(**kwargs)


def test_cpu_buckets_follow_real_lengths_and_bad_buckets_are_refused():
    assert sequence_buckets(64, CPU_BUCKETS) == (16, 24, 32, 40, 48, 56, 64)
    for buckets in ((32, 16, 64), (16, 16, 64), (0, 64)):
        with pytest.raises(ValueError, match="ascending"):
            ScoringSettings(max_length=64, buckets=buckets)

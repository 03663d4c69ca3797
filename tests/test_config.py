import pytest

from monitor.config import load_config
from monitor.errors import ConfigError


def test_defaults_are_valid() -> None:
    config = load_config()
    assert config.window.window_s == 2.0 and config.window.hop_s == 0.5


def test_toml_overrides_and_unknown_keys(tmp_path) -> None:
    path = tmp_path / "c.toml"
    path.write_text("[window]\nhop_s = 1.0\n[detectors.weights]\ntemporal = 0.25\n")
    config = load_config(path)
    assert config.window.hop_s == 1.0
    assert config.detectors.weights == {
        "lip_sync": 1.0,
        "lip_timing": 1.0,
        "temporal": 0.25,
        "artifact": 1.0,
    }
    path.write_text("[window]\nbogus = 1\n")
    with pytest.raises(ConfigError, match="window.bogus"):
        load_config(path)


@pytest.mark.parametrize(
    "overrides",
    [
        {"window": {"hop_s": 0}},
        {"window": {"hop_s": 3.0}},
        {"fusion": {"alert_threshold": 0.2}},
        {"detectors": {"time_budget_s": 0}},
        {"detectors": {"time_budget_s": float("inf")}},
        {"detectors": {"weights": {"temporal": -1.0}}},
    ],
)
def test_invalid_values_are_rejected(overrides) -> None:
    with pytest.raises(ConfigError):
        load_config(**overrides)


def test_missing_or_broken_config_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[window\n")
    with pytest.raises(ConfigError, match="TOML"):
        load_config(bad)

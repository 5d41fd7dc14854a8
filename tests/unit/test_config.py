import os

import pytest

from agent import config


def test_defaults_file_env_flags_in_order(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("probes:\n  ringbuf_pages: 64\n  ignore_prefixes: [/a]\noutput:\n  format: text\n")
    cfg = config.load(str(f), env={"NODEWARDEN_PROBES_RINGBUF_PAGES": "128"}, overrides={"output.format": "json"})
    assert cfg.probes.ringbuf_pages == 128
    assert cfg.probes.ignore_prefixes == ("/a",)
    assert cfg.output.format == "json"


@pytest.mark.parametrize(
    "text,msg",
    [
        ("probes:\n  nope: 1\n", "unknown config key 'probes.nope'"),
        ("probes:\n  ringbuf_pages: many\n", "probes.ringbuf_pages: expected a number"),
        ("probes: [1, 2\n", "not valid YAML"),
        ("agent: 3\n", "agent: expected a mapping"),
    ],
)
def test_bad_config_is_one_clear_error(tmp_path, text, msg):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError, match=msg.replace("[", r"\[")):
        config.load(str(f), env={})


def test_probe_defaults_match_the_sensor_registry():
    """ProbeConfig lives in agent/config.py (below the sensors); its defaults still name real families."""
    from agent.sensors import DEFAULT_FAMILIES, REGISTRY
    from agent.sensors.loader import LoadError, ProbeConfig, validate

    assert config.ProbeConfig is ProbeConfig
    assert config.ProbeConfig().families == DEFAULT_FAMILIES and set(DEFAULT_FAMILIES) <= set(REGISTRY)
    assert os.path.isfile(os.path.join(config.PROBES_DIR, "common.h"))
    validate(config.ProbeConfig())
    with pytest.raises(LoadError, match="unknown probe families"):
        validate(config.ProbeConfig(families=("nope",)))


def test_image_gate_settings_are_a_config_section(tmp_path):
    from agent.imagegate.config import ImageGateConfig

    f = tmp_path / "c.yaml"
    f.write_text("imagegate:\n  workers: 3\n  rule_dirs: [/r]\n")
    cfg = config.load(str(f), env={"NODEWARDEN_IMAGEGATE_CACHE_PATH": ""})
    assert isinstance(cfg.imagegate, ImageGateConfig) and ImageGateConfig is config.ImageGateConfig
    assert (cfg.imagegate.workers, cfg.imagegate.rule_dirs, cfg.imagegate.cache_path) == (3, ("/r",), "")

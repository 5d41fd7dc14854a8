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
        ("probes:\n  ringbuf_pages: many\n", "probes.ringbuf_pages: expected an integer, got 'many'"),
        ("agent:\n  drops_interval: soon\n", "agent.drops_interval: expected a number, got 'soon'"),
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


@pytest.mark.parametrize(
    "text,msg",
    [
        ("agent: {proctable_max: .inf}\n", "agent.proctable_max: expected an integer, got inf"),  # OverflowError
        ("agent: {proctable_max: 1.5}\n", "agent.proctable_max: expected an integer, got 1.5"),  # was truncated to 1
        ("agent: {proctable_max: true}\n", "agent.proctable_max: expected an integer, got True"),  # was 1
        ("agent: {drops_interval: .nan}\n", "agent.drops_interval: expected a finite number, got nan"),
        ("agent: {hold_s: -.inf}\n", "agent.hold_s: expected a finite number, got -inf"),
        ('agent: {node_name: "\\U00110000"}\n', "not valid YAML"),  # ValueError out of the scanner
        ('agent: {node_name: "\\UFFFFFFFF"}\n', "not valid YAML"),  # OverflowError out of the scanner
        ("[" * 5000 + "]" * 5000 + "\n", "not valid YAML: nested too deeply"),
        ("- 1\n", "config: expected a mapping, got list"),
        ("a: 1\n\0\n", "not valid YAML"),
    ],
)
def test_bad_values_are_one_clear_error_never_a_crash(tmp_path, text, msg):
    f = tmp_path / "c.yaml"
    f.write_text(text)
    with pytest.raises(config.ConfigError) as e:
        config.load(str(f), env={})
    assert msg in str(e.value) and "\n" not in str(e.value), str(e.value)


def test_config_file_not_utf8_or_not_a_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_bytes(b"agent: {node_name: \xff\xfe}\n")
    with pytest.raises(config.ConfigError, match="not UTF-8"):
        config.load(str(f), env={})
    with pytest.raises(config.ConfigError, match="cannot read config"):
        config.load(str(tmp_path), env={})


def test_an_empty_section_is_its_defaults(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("probes:\nagent:\n  proctable_max: 7\n")
    cfg = config.load(str(f), env={"NODEWARDEN_AGENT_PROCTABLE_MAX": "9"})
    assert cfg.probes == config.ProbeConfig() and cfg.agent.proctable_max == 9
    with pytest.raises(config.ConfigError, match="agent.proctable_max: expected an integer, got '1.5'"):
        config.load(None, env={"NODEWARDEN_AGENT_PROCTABLE_MAX": "1.5"})

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

"""Config: TOML + environment overrides, validated once with one clear line per mistake."""
from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from relay import config
from relay.errors import ConfigError

TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")


def test_defaults_match_the_design():
    cfg = config.load(None, {})
    assert cfg.smtp.listen == "127.0.0.1:2525" and cfg.smtp.max_message_size == 36700160
    assert cfg.smtp.max_line_length == 8192 and cfg.upstream.url == "capture:"
    assert cfg.http.public_url == "http://127.0.0.1:8080" and cfg.admin.listen == "127.0.0.1:8081"
    assert cfg.store.url == "sqlite:///var/trackrelay.db" and cfg.tracking.default_mode == "opt-in"
    assert cfg.delivery.retry_intervals == (60, 300, 900, 3600, 14400) and cfg.delivery.max_age == 5 * 86400
    assert cfg.notify.retry_intervals[0] == 10 and cfg.privacy.anonymize_ip is True
    assert cfg.privacy.retention_days == 365 and cfg.tracking.machine_window == 10
    assert cfg.tracking.rewrite_timeout == 5 and cfg.admin.public_url == "http://127.0.0.1:8081"
    assert config.load(None, {"TRACKRELAY_TRACKING_REWRITE_TIMEOUT": "250ms"}).tracking.rewrite_timeout == 0.25
    assert cfg.http.max_connections == 10000 and cfg.http.max_connections_per_ip == 256


def test_file_then_environment(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[smtp]\nlisten = "127.0.0.1:2600"\ntrusted_networks = ["10.0.0.0/8"]\n'
                 '[delivery]\nretry_intervals = ["30s", "2m"]\nmax_age = "1d"\n[upstream]\npassword = "s3cret"\n')
    cfg = config.load(f, {"TRACKRELAY_SMTP_LISTEN": "0.0.0.0:587", "TRACKRELAY_PRIVACY_ANONYMIZE_IP": "false"})
    assert cfg.smtp.listen == "0.0.0.0:587" and cfg.smtp.trusted_networks == ("10.0.0.0/8",)
    assert cfg.delivery.retry_intervals == (30, 120) and cfg.delivery.max_age == 86400
    assert cfg.privacy.anonymize_ip is False
    assert "s3cret" not in repr(cfg)


@pytest.mark.parametrize("toml,key", [
    ('[smtp]\nlisten = "nonsense"', "smtp.listen"),
    ('[smtp]\nlistn = "127.0.0.1:25"', "smtp.listn"),
    ('[smtpp]\nlisten = "127.0.0.1:25"', "smtpp"),
    ('[smtp]\nfrom_check = "warn"', "smtp.from_check"),
    ('[upstream]\nurl = "http://x"', "upstream.url"),
    ('[store]\nurl = "mysql://x"', "store.url"),
    ('[tracking]\ndefault_mode = "sometimes"', "tracking.default_mode"),
    ('[delivery]\nmax_age = "forever"', "delivery.max_age"),
    ('[smtp]\nmax_message_size = "big"', "smtp.max_message_size"),
    ('[smtp]\ntrusted_networks = ["10.0.0.0/33"]', "smtp.trusted_networks"),
    ('[privacy]\nanonymize_ip = "yes"', "privacy.anonymize_ip"),
    ('[tracking]\nrewrite_timeout = "0s"', "tracking.rewrite_timeout"),
    ('[tracking]\nrewrite_timeout = "soon"', "tracking.rewrite_timeout"),
    ('[admin]\npublic_url = "panel.example.com"', "admin.public_url"),
    ('[http]\nmax_connections_per_ip = -1', "http.max_connections_per_ip"),
    ('[store]\nconnections = 4', "store.connections"),  # SQLite (the default url) has no pool
    ('[store]\nurl = "postgresql://db/x"\nconnections = -1', "store.connections"),
    ('[smtp\nlisten=', "t.toml"),
])
def test_bad_values_name_their_key(tmp_path, toml, key):
    f = tmp_path / "t.toml"
    f.write_text(toml)
    with pytest.raises(ConfigError) as e:
        config.load(f, {})
    assert str(e.value).startswith(key) or key in str(e.value)


def test_unknown_environment_override_is_an_error():
    with pytest.raises(ConfigError, match="TRACKRELAY_SMTP_LISTN"):
        config.load(None, {"TRACKRELAY_SMTP_LISTN": "x"})


def test_cli_bad_config_is_one_line_and_non_zero(tmp_path):
    f = tmp_path / "bad.toml"
    f.write_text('[smtp]\nlisten = "nope"\n')
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    out = subprocess.run([TRACKRELAY, "serve", "-c", str(f)], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["trackrelay: smtp.listen: expected HOST:PORT, got 'nope'"]


def test_init_writes_a_config_that_checks(tmp_path):
    f = tmp_path / "new.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    subprocess.run([TRACKRELAY, "init", "-c", str(f)], check=True, capture_output=True, env=env, timeout=60)
    first = config.load(f, {})
    assert len(first.admin.secret_key) >= 32
    out = subprocess.run([TRACKRELAY, "check-config", "-c", str(f)], capture_output=True, text=True, env=env,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    again = subprocess.run([TRACKRELAY, "init", "-c", str(f)], capture_output=True, text=True, env=env, timeout=60)
    assert again.returncode == 2 and "exists" in again.stderr
    f2 = tmp_path / "other.toml"
    subprocess.run([TRACKRELAY, "init", "-c", str(f2)], check=True, capture_output=True, env=env, timeout=60)
    assert config.load(f2, {}).admin.secret_key != first.admin.secret_key


def test_notify_keys_are_built_and_checked(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[notify]\nallow_private_targets = true\nretry_intervals = ["1s", "2m"]\nmax_age = "1h"\n'
                 'timeout = "2s"\n[admin]\npublic_url = "https://panel.example/"\n')
    cfg = config.load(f, {})
    assert (cfg.notify.allow_private_targets, cfg.notify.retry_intervals) == (True, (1.0, 120.0))
    assert (cfg.notify.max_age, cfg.notify.timeout, cfg.admin.public_url) == (3600.0, 2.0, "https://panel.example/")
    assert "notify" in config.PARTS
    for bad, key in (('timeout = "0s"', "notify.timeout"), ("retry_intervals = []", "notify.retry_intervals")):
        f.write_text(f"[notify]\n{bad}\n")
        with pytest.raises(ConfigError) as e:
            config.load(f, {})
        assert str(e.value).startswith(key)


def test_privacy_retention_keys_are_read_and_checked(tmp_path):
    f = tmp_path / "t.toml"
    f.write_text('[privacy]\nretention_days = 30\npurge_time = "22:05"\n')
    cfg = config.load(f, {})
    assert (cfg.privacy.retention_days, cfg.privacy.purge_time) == (30, "22:05")
    assert config.load(None, {"TRACKRELAY_PRIVACY_RETENTION_DAYS": "0"}).privacy.retention_days == 0
    for bad, key in (("retention_days = -1", "privacy.retention_days"), ('purge_time = "25:00"', "privacy.purge_time"),
                     ('purge_time = "3am"', "privacy.purge_time"), ('retention_days = "1y"', "privacy.retention_days")):
        f.write_text(f"[privacy]\n{bad}\n")
        with pytest.raises(ConfigError) as e:
            config.load(f, {})
        assert str(e.value).startswith(key)


@pytest.mark.parametrize("verb", ["check-config", "serve"])
def test_cli_refuses_a_bad_privacy_key_in_one_line(tmp_path, verb):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env["TRACKRELAY_PRIVACY_PURGE_TIME"] = "noon"
    env["TRACKRELAY_STORE_URL"] = f"sqlite:///{tmp_path}/never.db"
    for part in ("SMTP", "HTTP", "ADMIN"):  # should it start after all, on no port anyone uses
        env[f"TRACKRELAY_{part}_LISTEN"] = "127.0.0.1:0"
    out = subprocess.run([TRACKRELAY, verb], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("trackrelay: privacy.purge_time: expected HH:MM")


@pytest.mark.parametrize("verb", ["check-config", "serve"])
def test_a_dkim_key_that_cannot_sign_is_refused_at_start(tmp_path, verb):
    bad = tmp_path / "dkim.pem"
    bad.write_text("-----BEGIN RSA PRIVATE KEY-----\nnot a key\n-----END RSA PRIVATE KEY-----\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    env.update({"TRACKRELAY_DKIM_DOMAIN": "shop.example", "TRACKRELAY_DKIM_SELECTOR": "mail",
                "TRACKRELAY_DKIM_KEY_FILE": str(bad), "TRACKRELAY_STORE_URL": f"sqlite:///{tmp_path}/never.db"})
    for part in ("SMTP", "HTTP", "ADMIN"):
        env[f"TRACKRELAY_{part}_LISTEN"] = "127.0.0.1:0"
    out = subprocess.run([TRACKRELAY, verb], capture_output=True, text=True, env=env, timeout=60)
    assert out.returncode == 2
    [line] = out.stderr.strip().splitlines()
    assert line.startswith("trackrelay: dkim.key_file: cannot sign with it")


def test_a_good_dkim_key_checks(tmp_path):
    private = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    good = tmp_path / "dkim.pem"
    good.write_bytes(private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cfg = config.load(None, {"TRACKRELAY_DKIM_DOMAIN": "shop.example", "TRACKRELAY_DKIM_SELECTOR": "mail",
                             "TRACKRELAY_DKIM_KEY_FILE": str(good)})
    assert cfg.dkim.key_file == str(good)


def test_init_writes_every_key_with_a_comment_and_loads_back_to_the_defaults(tmp_path):
    f = tmp_path / "new.toml"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")}
    subprocess.run([TRACKRELAY, "init", "-c", str(f)], check=True, capture_output=True, env=env, timeout=60)
    text = f.read_text()
    sections = dict(re.findall(r"^\[(\w+)\]\n(.*?)(?=^\[|\Z)", text, re.M | re.S))
    defaults = config.Config()
    for section in dataclasses.fields(defaults):
        if section.name == "source":
            continue
        body = sections[section.name]
        for key in dataclasses.fields(getattr(defaults, section.name)):
            # a comment line, then the key (commented out only where the default is the machine's own)
            assert re.search(rf"^# .+\n(# )?{key.name} = ", body, re.M), f"{section.name}.{key.name}"
    loaded = config.load(f, {})
    assert len(loaded.admin.secret_key) >= 32
    fresh = dataclasses.replace(defaults, admin=dataclasses.replace(defaults.admin, secret_key=loaded.admin.secret_key),
                                source=str(f))
    assert loaded == fresh

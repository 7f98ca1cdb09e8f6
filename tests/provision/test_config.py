"""The ``provision:`` block of a source: strict, one-line errors naming the key."""

from __future__ import annotations

import pytest
import yaml

from lms_sync.config import parse_config
from lms_sync.errors import ConfigError
from lms_sync.provision.run import from_sources
from tests.cli_helpers import run_cli

SPARKWISE = {"kind": "sessions", "base_url": "http://127.0.0.1:9", "auth": {"api_key": "k-123"}}
HR = {"kind": "synthetic", "base_url": "http://127.0.0.1:9"}


def sources(provision, **extra):
    return {"sources": {"hr": HR, "lms": {**HR, "enabled": False}, "old": {**HR},
                        "sw": {**SPARKWISE, "provision": provision}, **extra}}


def test_defaults_and_from_sources():
    cfg = parse_config(sources({}))
    p = cfg.sources["sw"].provision
    assert (p.enabled, p.require_hr_id, p.deactivate_leavers, p.max_deactivate_fraction,
            p.schedule) == (True, True, True, 0.05, None)
    assert from_sources(cfg, cfg.sources["sw"]) == ["hr", "old"]  # every other enabled source
    cfg = parse_config(sources({"from_sources": ["lms"], "schedule": "30 6 * * *"}))
    assert from_sources(cfg, cfg.sources["sw"]) == ["lms"]
    assert cfg.sources["hr"].provision is None


BAD = {
    "kind-cannot": ({"sources": {"hr": {**HR, "provision": {}}}},
                    ["source kind 'synthetic' cannot provision users", "sources.hr.provision",
                     "kinds that can: sessions"]),
    "unknown-source": (sources({"from_sources": ["hr", "nope"]}),
                       ["unknown source 'nope'", "sources.sw.provision.from_sources.1", "hr"]),
    "itself": (sources({"from_sources": ["sw"]}), ["cannot provision from itself"]),
    "empty-list": (sources({"from_sources": []}), ["sources.sw.provision.from_sources"]),
    "no-hr-id": (sources({"require_hr_id": False}),
                 ["sources.sw.provision.require_hr_id", "only true is supported"]),
    "fraction": (sources({"max_deactivate_fraction": 5}),
                 ["sources.sw.provision.max_deactivate_fraction", "less than or equal to 1"]),
    "schedule": (sources({"schedule": "daily"}), ["cron expression", "sources.sw.provision.schedule"]),
    "typo": (sources({"deactivate_leaver": True}),
             ["unknown key", "sources.sw.provision.deactivate_leaver"]),
    "not-a-mapping": (sources(True), ["provision must be a mapping"]),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_provision_block_is_one_config_error(case):
    tree, fragments = BAD[case]
    with pytest.raises(ConfigError) as err:
        parse_config(tree, "c.yaml")
    text = str(err.value)
    assert "\n" not in text
    for fragment in fragments:
        assert fragment in text, text


def test_provision_needs_a_block_exit_2_one_line(tmp_path, sqlite_warehouse):
    path = tmp_path / "config.yaml"
    tree = {"warehouse": sqlite_warehouse.config_block(), "sources": {"sw": SPARKWISE}}
    path.write_text(yaml.safe_dump(tree), encoding="utf-8")
    proc = run_cli("provision", "--config", str(path), "--source", "sw")
    assert proc.returncode == 2
    assert proc.stderr == (f"lms-sync: error: source 'sw' has no provision block, {path}: "
                           "sources.sw; add provision: (see config.example.yaml)\n")
    assert run_cli("provision", "--config", str(path)).returncode == 2  # --source is required

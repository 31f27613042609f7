"""API keys in WakaTime's format (pure parts: no database)."""

from __future__ import annotations

import re

from jobs.keys import hash_key, new_key, normalize_key

UUID4 = "3f0c1a52-6b1e-4c4e-9a55-0d2b7b1c9e10"


def test_new_keys_have_wakatimes_format_and_differ():
    keys = {new_key() for _ in range(100)}
    assert len(keys) == 100
    # the check wakatime-cli and the plugins apply before they send a key
    assert all(
        re.fullmatch(r"waka_[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", k)
        for k in keys
    )


def test_normalize_drops_the_prefix_and_case():
    assert normalize_key(UUID4) == UUID4
    assert normalize_key(f"waka_{UUID4}") == UUID4
    assert normalize_key(f"  waka_{UUID4.upper()}\n") == UUID4
    assert hash_key(normalize_key(f"waka_{UUID4}")) == hash_key(normalize_key(UUID4))


def test_anything_else_is_not_a_key():
    for text in ("", "hunter2", UUID4[:-1], UUID4.replace("-4c4e-", "-1c4e-"), f"waka-{UUID4}",
                 f"{UUID4}; DROP TABLE api_keys", f"waka_{UUID4}\x00"):  # fmt: skip
        assert normalize_key(text) is None, text

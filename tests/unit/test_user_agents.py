"""Version metadata parsing (SPEC section 4): the spec's examples, the corpus in tests/data, fuzzing."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from jobs.user_agents import UserAgentInfo, _parse, normalize_os, parse_user_agent, semver_parts
from tests.streams import CORPUS


def corpus() -> list[str]:
    if not CORPUS.exists():
        pytest.fail(f"the corpus is missing: {CORPUS}")
    return [line for line in CORPUS.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_spec_example_go_cli():
    info = _parse(
        "wakatime/v1.90.0 (linux-6.5.0-15-generic-x86_64) go1.21.5 vscode/1.85.1 vscode-wakatime/24.4.0"
    )
    assert info == UserAgentInfo(
        editor="vscode", editor_version="1.85.1", plugin="vscode-wakatime", plugin_version="24.4.0",
        cli_version="1.90.0", os="linux", is_browser_extension=False,
        version_major=24, version_minor=4, version_patch=0, version_prerelease=None,
    )  # fmt: skip


def test_spec_example_python_cli():
    info = _parse(
        "wakatime/13.1.0 (Linux-5.15.0-91-generic-x86_64-with-glibc2.35) Python3.11.7.final.0 emacs/29.1 "
        "emacs-wakatime/1.0.2"
    )
    assert (info.editor, info.editor_version, info.plugin, info.plugin_version, info.cli_version, info.os) == (
        "emacs", "29.1", "emacs-wakatime", "1.0.2", "13.1.0", "linux",
    )  # fmt: skip
    assert (info.version_major, info.version_minor, info.version_patch) == (1, 0, 2)


def test_spec_example_browser_extension():
    info = _parse("Chrome/120.0.6099.109 chrome-wakatime/3.0.17")
    assert (info.editor, info.plugin, info.plugin_version, info.is_browser_extension) == (
        "chrome", "chrome-wakatime", "3.0.17", True,
    )  # fmt: skip
    assert info.cli_version is None


@pytest.mark.parametrize(
    ("text", "os"),
    [
        ("linux-6.5.0-15-generic-x86_64", "linux"),
        ("Linux-5.15.0-91-generic-x86_64-with-glibc2.35", "linux"),
        ("darwin-23.4.0-arm64", "macos"),
        ("Macintosh; arm64; macOS 15.2", "macos"),
        ("mac_arm64", "macos"),
        ("windows-10.0.22631-x86_64", "windows"),
        ("Windows_NT 10.0.26100", "windows"),
        ("Win11-wakatime", "windows"),
        ("win_x86-64", "windows"),
        ("linux-6.6.87.2-microsoft-standard-WSL2-x86_64", "wsl"),
        ("linux-wsl2-x86_64", "wsl"),
        ("iPhone", "iphone"),
        ("web", "web"),
        ("", None),
    ],
)
def test_os_normalisation(text, os):
    assert normalize_os(text) == os


@pytest.mark.parametrize(
    ("version", "parts"),
    [
        ("24.4.0", (24, 4, 0, None)),
        ("v1.1.5", (1, 1, 5, None)),
        ("0.118.0-alpha.2", (0, 118, 0, "alpha.2")),
        ("1.108.0-insider", (1, 108, 0, "insider")),
        ("1", (1, None, None, None)),
        ("2019.3", (2019, 3, None, None)),
        ("unknown", (None, None, None, None)),
        (None, (None, None, None, None)),
        ("99999999999.1.2", (None, 1, 2, None)),  # does not fit an integer column
    ],
)
def test_semver_parts(version, parts):
    assert semver_parts(version) == parts


@pytest.mark.parametrize(
    ("agent", "editor", "plugin", "os", "browser"),
    [
        (
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/116.0.0.0 "
            "Safari/537.36 Edg/116.0.1938.62 win_x86-64 edge-wakatime/3.0.18",
            "edge",
            "edge-wakatime",
            "windows",
            True,
        ),
        ("Firefox/139.0 linux_x86-64 firefox-wakatime/4.1.0", "firefox", "firefox-wakatime", "linux", True),
        (
            "onshape-wakatime-plugin_Chrome/138.0.0.0 Windows_NT_10.0 onshape-wakatime/1.0.1",
            "chrome",
            "onshape-wakatime",
            "windows",
            True,
        ),
        (
            "wakatime/v1.86.5 (linux-6.6.4-200.fc39.x86_64-unknown) go1.21.3 neovim/900 vim-wakatime/11.1.1",
            "neovim",
            "vim-wakatime",
            "linux",
            False,
        ),
        (
            "wakatime/v2.22.0 (windows-10.0.26200.8655-x86_64) go1.26.5 (/1) Visual Studio Code/1.127.0 "
            "(Continue/2.1.0)",
            "visual studio code",
            None,
            "windows",
            False,
        ),
        (
            "wakatime/v1.18.11 (linux-5.13.8-200.fc34.x86_64-x86_64) go1.16.7 emacs-wakatime/1.0.2",
            "emacs",
            "emacs-wakatime",
            "linux",
            False,
        ),
        (
            "wakatime/v2.22.2 (darwin-arm64) go1.26.5 gpt/5.6 vscode-wakatime/unknown Zed/1.11.3 Zed-hackatime/0.3.1",
            "zed",
            "zed-hackatime",
            "macos",
            False,
        ),
    ],
)
def test_real_agents(agent, editor, plugin, os, browser):
    info = _parse(agent)
    assert (info.editor, info.plugin, info.os, info.is_browser_extension) == (editor, plugin, os, browser)


def test_whole_corpus_parses_without_error():
    for line in corpus():
        info = _parse(line)  # no safety net: the parser itself must not raise
        assert isinstance(info, UserAgentInfo)


def test_corpus_properties():
    for line in corpus():
        info = _parse(line)
        cli = re.match(r"wakatime/v?(\d[\w.\-+]*)", line)
        if cli:
            assert info.cli_version == cli.group(1), line
        if info.plugin_version and info.version_major is not None:
            assert info.plugin_version.lstrip("v").startswith(str(info.version_major)), line
        for value in (info.editor, info.plugin, info.os):
            assert value is None or (value == value.strip().lower() and value), line
        for part in (info.version_major, info.version_minor, info.version_patch):
            assert part is None or 0 <= part < 2**31, line
        if re.search(r"\b[\w.]+-wakatime/\d", line):
            assert info.plugin, line


@settings(max_examples=2000, deadline=None)
@given(st.text(max_size=300))
def test_fuzz_never_raises(text):
    assert isinstance(_parse(text), UserAgentInfo)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "wakatime/",
                "v1.2.3",
                "(",
                ")",
                " ",
                "/",
                "-wakatime",
                "go1.2",
                "linux-",
                "Chrome",
                "_",
                "x",
                "Visual",
                "Code/1.2",
                "unknown",
                "9" * 12,
                "-",
                "+",
            ]
        ),
        max_size=30,
    )
)
def test_fuzz_agent_shaped_text_never_raises(parts):
    assert isinstance(_parse("".join(parts)), UserAgentInfo)


def test_public_function_is_cached_and_safe():
    assert parse_user_agent("Chrome/1 chrome-wakatime/1.0.0") is parse_user_agent(
        "Chrome/1 chrome-wakatime/1.0.0"
    )

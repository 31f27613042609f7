"""Version metadata from WakaTime user agents (SPEC section 4, table ``user_agents``).

A WakaTime user agent is roughly::

    wakatime/<cli> (<os>-<release>-<arch>) <runtime> <editor>/<version> <plugin>-wakatime/<version>

but real strings vary a lot (see ``tests/data/user_agents.txt``): browser extensions have no
CLI part, AI tools add their own products, names contain spaces, versions are ``unknown``. The
parser reads what it can and leaves the rest ``None``; it never raises on any string.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

MAX_INT = 2**31 - 1

_CLI = re.compile(r"^\s*wakatime/(\S*)", re.IGNORECASE)
_PAREN = re.compile(r"\(([^()]*)\)")
# A bare runtime token the CLI adds: go1.21.5, Python3.11.7.final.0, Java21.0.2.
_RUNTIME = re.compile(r"^(?:go|python|java)\d", re.IGNORECASE)
# A platform token outside parentheses: linux_x86-64, win_x86-64, mac_arm64, macOS/10.15.7, ...
_PLATFORM = re.compile(
    r"^(?:linux|darwin|mac|macos|win|windows|windows_nt|cros|android|ios)(?:$|[_/\-.\d])", re.IGNORECASE
)
# Words that may start a multi-word product name ("Visual Studio Code/1.90", "Code - OSS/1.90").
_NAME_WORD = re.compile(r"^(?:[A-Z][\w.+#']*|[-+])$")
_PLUGIN_SUFFIX = re.compile(r"[-_.](?:wakatime|hackatime)$")
_SEMVER = re.compile(r"^v?(\d+)(?:\.(\d+))?(?:\.(\d+))?(?:-([0-9A-Za-z][0-9A-Za-z.-]*))?")
_NOT_A_VERSION = frozenset({"", "unknown", "unset", "none", "null", "undefined"})
_BROWSERS = {
    "chrome": "chrome",
    "firefox": "firefox",
    "edg": "edge",
    "edga": "edge",
    "edge": "edge",
    "microsoft edge": "edge",
    "opr": "opera",
    "opera": "opera",
    "safari": "safari",
    "brave": "brave",
}
# Products that describe the browser engine rather than what the user runs.
_ENGINE_NOISE = frozenset({"mozilla", "applewebkit", "gecko", "khtml", "mobile safari"})
_OS_WORDS = re.compile(r"^(?:linux|darwin|mac|macos|macintosh|osx|win|windows|x11|android|cros|wsl)", re.I)


@dataclass(frozen=True, slots=True)
class UserAgentInfo:
    editor: str | None = None
    editor_version: str | None = None
    plugin: str | None = None
    plugin_version: str | None = None
    cli_version: str | None = None
    os: str | None = None
    is_browser_extension: bool = False
    version_major: int | None = None
    version_minor: int | None = None
    version_patch: int | None = None
    version_prerelease: str | None = None

    def as_row(self) -> dict[str, object]:
        # (dataclasses.asdict deep-copies each value: a tenth of an updater's CPU under live traffic)
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True, slots=True)
class _Product:
    name: str
    version: str | None

    @property
    def key(self) -> str:
        return self.name.lower()

    @property
    def is_plugin(self) -> bool:
        return ("wakatime" in self.key or "hackatime" in self.key) and self.browser is None

    @property
    def browser(self) -> str | None:
        key = self.key
        # "onshape-wakatime-plugin_Chrome" names the browser after an underscore.
        return _BROWSERS.get(key) or _BROWSERS.get(re.split(r"[_ ]", key)[-1])


def normalize_os(text: str) -> str | None:
    """``linux``, ``macos``, ``windows``, ``wsl``, else the lower-cased leading token."""
    lowered = text.strip().lower()
    if not lowered:
        return None
    if "wsl" in lowered or "microsoft-standard" in lowered:
        return "wsl"
    token = re.split(r"[\s;,_\-]", lowered, maxsplit=1)[0]
    if token.startswith(("darwin", "mac", "osx")):
        return "macos"
    if token.startswith("win"):
        return "windows"
    if token.startswith("linux"):
        return "linux"
    if "/" in token:  # a product, not a platform: "(VSCode/1.85.0)"
        return None
    token = re.match(r"[\w.#+]*", token).group()
    return token or None


def clean_version(version: str | None) -> str | None:
    if version is None or version.strip().lower() in _NOT_A_VERSION:
        return None
    return version.strip()


def semver_parts(version: str | None) -> tuple[int | None, int | None, int | None, str | None]:
    """(major, minor, patch, prerelease) of a version, leniently; parts that are not there are None."""
    match = _SEMVER.match(version or "")
    if not match:
        return None, None, None, None

    def number(text: str | None) -> int | None:
        return int(text) if text is not None and int(text) <= MAX_INT else None

    major, minor, patch, prerelease = match.groups()
    return number(major), number(minor), number(patch), prerelease


def _tokens(text: str) -> list[str | _Product]:
    """Split into products (name/version, multi-word names joined) and leftover bare words."""
    out: list[str | _Product] = []
    for token in text.split():
        if "/" not in token or _RUNTIME.match(token) or token.startswith("/"):
            out.append(token)
            continue
        name, _, version = token.rpartition("/")
        # "Visual Studio Code/1.90": capitalised (or numeric) names take the capitalised words
        # before them; plugins never do ("Python/2023.1 EAP Python-wakatime/14.1.3").
        if (name[:1].isupper() or name[:1].isdigit()) and "wakatime" not in name.lower():
            words: list[str] = []
            while out and len(words) < 4 and isinstance(out[-1], str) and _is_name_word(out[-1]):
                words.insert(0, out.pop())
            while words and words[0] in "-+":
                out.append(words.pop(0))
            name = " ".join([*words, name])
        out.append(_Product(name, version))
    return out


def _is_name_word(word: str) -> bool:
    return bool(_NAME_WORD.match(word)) and not _RUNTIME.match(word) and not _PLATFORM.match(word)


def _parse(user_agent: str) -> UserAgentInfo:
    text = user_agent.strip()
    cli_version = None
    cli = _CLI.match(text)
    if cli:
        cli_version = _cli_version(cli.group(1))
        text = text[cli.end() :]

    # The parenthesised group right after the CLI is the platform; otherwise any group that
    # starts with an OS word ("Mozilla/5.0 (Windows NT 10.0; Win64; x64)").
    os_name = None
    for index, group in enumerate(_PAREN.finditer(text)):
        content = group.group(1)
        right_after_cli = cli and index == 0 and not text[: group.start()].strip()
        if right_after_cli or (os_name is None and _OS_WORDS.match(content.strip())):
            os_name = os_name or normalize_os(content)
    text = _PAREN.sub(" ", text)

    products: list[_Product] = []
    for token in _tokens(text):
        if isinstance(token, _Product):
            if token.key in ("wakatime", "wakatime-cli"):
                cli_version = cli_version or _cli_version(token.version or "")
            elif _PLATFORM.match(token.name) and not token.is_plugin:
                os_name = os_name or normalize_os(token.name)
            elif token.key not in _ENGINE_NOISE:
                products.append(token)
        elif _PLATFORM.match(token) and "wakatime" not in token.lower():
            os_name = os_name or normalize_os(token)

    # The plugin is the last wakatime-ish product; the editor is the product right before it,
    # else what the plugin is named after ("emacs-wakatime"), else the product right after it.
    plugin_index = max((i for i, p in enumerate(products) if p.is_plugin), default=None)
    if plugin_index is None:
        plugin, editor = None, next((p for p in reversed(products) if not p.is_plugin), None)
    else:
        plugin = products[plugin_index]
        editor = next((p for p in reversed(products[:plugin_index]) if not p.is_plugin), None)
        if editor is None and _PLUGIN_SUFFIX.search(plugin.key):
            editor = _Product(_PLUGIN_SUFFIX.sub("", plugin.key), None)
        if editor is None:
            editor = next((p for p in products[plugin_index + 1 :] if not p.is_plugin), None)

    browser = editor.browser if editor else None
    plugin_version = clean_version(plugin.version) if plugin else None
    major, minor, patch, prerelease = semver_parts(plugin_version)
    return UserAgentInfo(
        editor=browser or (editor.key if editor else None),
        editor_version=clean_version(editor.version) if editor else None,
        plugin=plugin.key if plugin else None,
        plugin_version=plugin_version,
        cli_version=cli_version,
        os=os_name,
        is_browser_extension=browser is not None,
        version_major=major,
        version_minor=minor,
        version_patch=patch,
        version_prerelease=prerelease,
    )


def _cli_version(text: str) -> str | None:
    version = text.removeprefix("v").removeprefix("V")
    return version if version[:1].isdigit() else None


@lru_cache(maxsize=4096)
def parse_user_agent(user_agent: str) -> UserAgentInfo:
    """Parse a user agent; an unparseable string gives a row of None parts, never an error.

    The rules live in ``_parse``, which the tests run on that corpus and on fuzzed input
    to show it does not raise; the guard here keeps a parser bug from failing a derived job.
    """
    try:
        return _parse(user_agent)
    except Exception:  # a version-metadata bug must never block coding-time accounting
        return UserAgentInfo()

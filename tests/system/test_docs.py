"""README against the code: the configuration table against the settings parser, its
defaults and the CLI help; the metrics table against /metrics; the links of every doc."""

from __future__ import annotations

import re
import subprocess
import sys
from typing import NamedTuple, Optional

import pytest

from proxpi_min.core import settings as settings_module
from proxpi_min.core.settings import OLD_EXTRA_INDEX_TTLS, parse_settings
from proxpi_min.core.units import parse_size
from tests.support.prometheus import parse
from tests.support.proxy import REPO_ROOT, proxy_env

README = REPO_ROOT / "README.md"
DOCS = [README, REPO_ROOT / "ARCHITECTURE.md", REPO_ROOT / "CHANGELOG.md", REPO_ROOT / "bench" / "README.md",
        *sorted((REPO_ROOT / "docs").glob("*.md"))]
README_MAX_LINES = 360  # about 350: a manual a user reads through, not a reference to search
# Options of the command line that are not settings (the table's text covers --check-config).
NOT_SETTINGS = {"--help", "--version", "--check-config"}
# Every parse below sees one extra index, so that a TTL per extra index is valid.
EXTRA_INDEX = {"PROXPI_EXTRA_INDEX_URLS": "http://127.0.0.1:9/simple/"}
# proxpi's older names, read too: each is named in its setting's row, not a row of its own.
OLDER_NAMES = {OLD_EXTRA_INDEX_TTLS: "PROXPI_EXTRA_INDEX_TTLS"}


class ConfigRow(NamedTuple):
    """One row of README's configuration table."""

    variable: str
    flag: str
    repeatable: bool
    default: Optional[str]  # the literal in backticks, or None for words ("none", "off")


def _section(text: str, heading: str) -> str:
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.S | re.M)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def _table(section: str) -> list:
    """The cells of the first Markdown table in *section*, header and rule left out."""
    rows = [line for line in section.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", row)[1:-1]] for row in rows[2:]]


def _config_rows() -> list:
    rows = []
    for cells in _table(_section(README.read_text(), "Configuration")):
        variable = re.fullmatch(r"`(PROXPI_[A-Z_]+)(?:=1)?`", cells[0])
        flag = re.fullmatch(r"`(--[a-z][a-z0-9-]*)`( \(repeat\))?", cells[1])
        assert variable and flag, cells
        default = re.fullmatch(r"`([^`]+)`(?: each)?", cells[2])
        rows.append(ConfigRow(variable.group(1), flag.group(1), bool(flag.group(2)), default and default.group(1)))
    return rows


class _Recording(dict):
    """A mapping that notes every key looked up, to learn what the parser reads."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.asked: set = set()

    def get(self, key, default=None):
        self.asked.add(key)
        return super().get(key, default)

    def __getitem__(self, key):
        self.asked.add(key)
        return super().__getitem__(key)

    def __contains__(self, key) -> bool:
        self.asked.add(key)
        return super().__contains__(key)


def _help_text(*args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "proxpi_min", *args, "--help"],
        cwd=str(REPO_ROOT), env=proxy_env(), capture_output=True, text=True, timeout=30,
    )
    return result.stdout if result.returncode == 0 else ""


def _serving_help() -> dict:
    """Flag -> its help text, from ``--help`` without a command (and ``serve --help``
    where that command exists): the options of serving."""
    blocks: dict = {}
    for text in (_help_text(), _help_text("serve")):
        current = None
        for line in text.splitlines():
            option = re.match(r"^\s{1,8}(?:-\w(?: \S+)?, )?(--[a-z][a-z0-9-]*)", line)
            if option:
                current = option.group(1)
                blocks[current] = blocks.get(current, "") + " " + line[option.end():]
            elif current and line.startswith(" " * 8) and line.strip():
                blocks[current] += " " + line.strip()
            else:
                current = None
    assert blocks, "no option found in --help"
    return blocks


def _settings(env: dict, flags: Optional[dict] = None):
    return parse_settings({**EXTRA_INDEX, **env}, flags or {})


def test_readme_table_has_every_variable_the_parser_reads():
    env, flags = _Recording(), _Recording()
    parse_settings(env, flags)
    read = {key for key in env.asked if key.startswith("PROXPI_")}
    assert read, "the parser read no PROXPI_ variable"
    assert {row.variable for row in _config_rows()} == read - set(OLDER_NAMES)
    table = _section(README.read_text(), "Configuration")
    for older, variable in OLDER_NAMES.items():
        assert re.search(rf"^\| `{variable}` \|.*`{older}`", table, re.M), older


def test_readme_table_has_every_flag_of_serving():
    flags = set(_serving_help()) - NOT_SETTINGS
    assert {row.flag for row in _config_rows()} == flags


def test_readme_flag_and_variable_of_each_row_are_one_setting():
    env, flags = _Recording(), _Recording()
    parse_settings(env, flags)
    help_of = _serving_help()
    for row in _config_rows():
        assert row.flag.lstrip("-").replace("-", "_") in flags.asked, row
        # The flag's help, where it names a variable, names the row's.
        named = set(re.findall(r"PROXPI_[A-Z_]+", help_of[row.flag]))
        older = {name for name, variable in OLDER_NAMES.items() if variable == row.variable}
        assert named <= {row.variable} | older, (row, named)


def test_readme_defaults_are_the_parsers_defaults():
    nothing_set = _settings({})
    literal = [row for row in _config_rows() if row.default is not None]
    assert len(literal) >= 10
    for row in literal:
        assert _settings({row.variable: row.default}) == nothing_set, row
        value = [row.default] if row.repeatable else row.default
        assert _settings({}, {row.flag.lstrip("-").replace("-", "_"): value}) == nothing_set, row


def test_readme_defaults_are_the_settings_constants():
    rows = {row.variable: row for row in _config_rows()}
    constants = {name: value for name, value in vars(settings_module).items() if name.startswith("DEFAULT_")}
    assert len(constants) >= 8
    for name, value in constants.items():
        variable = "PROXPI_" + name[len("DEFAULT_"):]
        row = rows.get(variable) or rows.get(variable + "S")  # DEFAULT_EXTRA_INDEX_TTL: one per URL
        assert row is not None, f"README's table has no row for {name}"
        if row.default is None:  # a word ("none", "off", "a new temp dir"): no value set
            assert not value, (name, row)
        elif isinstance(value, str):
            assert row.default == value, (name, row)
        elif re.search(r"[KMGT]$", row.default):
            assert parse_size(row.default) == value, (name, row)
        else:
            assert float(row.default) == value, (name, row)


def test_help_defaults_agree_with_readme():
    help_blocks = _serving_help()
    for row in _config_rows():
        found = re.search(r"\bdefault:?\s+([^\s,;)]+)", help_blocks[row.flag])
        if row.default is None or found is None:
            continue
        assert _settings({row.variable: found.group(1)}) == _settings({row.variable: row.default}), (row, found.group(1))


def test_readme_metrics_table_is_what_metrics_serves(proxy, upstream_html):
    running = proxy(upstream_html)
    assert running.get("/index/alpha/").status == 200
    result = running.get("/metrics")
    assert result.status == 200
    served, _ = parse(result.text)
    documented = {}
    for cells in _table(_section(README.read_text(), "Monitoring")):
        for name in re.findall(r"`(proxpi_\w+)`", cells[0]):
            documented[name] = cells[1]
    assert documented == served


def test_readme_is_a_manual_not_a_log():
    lines = README.read_text().splitlines()
    assert len(lines) <= README_MAX_LINES, f"README has {len(lines)} lines"
    # The two commands at the very top, exactly as CI and newcomers run them.
    top = "\n".join(lines[:12])
    assert "./zipapp.sh && python proxpi.pyz" in top
    assert "python -m pip install pytest && python -m pytest -q" in top


def _anchors(path) -> set:
    """GitHub's anchors for the headings of a Markdown file."""
    anchors = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.replace("`", "").strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=lambda path: str(path.relative_to(REPO_ROOT)))
def test_doc_links_reach_their_files_and_headings(doc):
    assert doc.is_file(), doc
    for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # another site
        path, _, anchor = target.partition("#")
        file = (doc.parent / path).resolve() if path else doc
        assert file.exists(), f"{doc.name}: {target}"
        if anchor and file.suffix == ".md":
            assert anchor in _anchors(file), f"{doc.name}: {target}"

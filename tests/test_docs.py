"""The documentation keeps up with the code: every hook, signal and command is documented.

Modelled on datasette's test_docs.py. Headings are parsed from the reStructuredText
source (a line followed by an underline of ``=``, ``-``, ``~`` or ``^`` at least as long),
so these tests need neither Sphinx nor docutils.
"""

from __future__ import annotations

import ast
import inspect
import itertools
import re
from pathlib import Path

import click
import pytest
from rst_blocks import code_blocks

from dbguard_plugin import cli, signals
from dbguard_plugin.plugin import hookspecs
from dbguard_plugin.settings import config

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
TESTS = ROOT / "tests"

_UNDERLINE = re.compile(r"^([=\-~^])\1*$")


def headings(path: Path) -> list[str]:
    """Every section title in *path*: a line followed by a long enough underline."""
    lines = path.read_text(encoding="utf-8").splitlines()
    found = []
    for line, underline in itertools.pairwise(lines):
        title = line.rstrip()
        if (
            title
            and not title[0].isspace()
            and not _UNDERLINE.match(title)
            and _UNDERLINE.match(underline.rstrip())
            and len(underline.rstrip()) >= len(title)
        ):
            found.append(title)
    return found


def section(path: Path, title: str) -> str:
    """The text of the section headed *title*, up to the next heading."""
    lines = path.read_text(encoding="utf-8").splitlines()
    titles = set(headings(path))
    start = lines.index(title) + 2
    end = next(
        (
            i
            for i in range(start, len(lines) - 1)
            if lines[i] in titles and _UNDERLINE.match(lines[i + 1].rstrip())
        ),
        len(lines),
    )
    return "\n".join(lines[start:end])


# -- what the code defines -----------------------------------------------------------------

HOOKS = {
    name: function
    for name, function in inspect.getmembers(hookspecs, inspect.isfunction)
    if name.startswith("dbguard_")
}

SIGNAL_ATTRIBUTES = {
    value.name: name
    for name, value in vars(signals).items()
    if any(value is signal for signal in signals.ALL)
}

COMMANDS = sorted(cli.COMMANDS)

EXIT_CODES = {
    "ok": cli.EXIT_OK,
    "failure": cli.EXIT_FAILURE,
    "usage or configuration error": cli.EXIT_USAGE,
    "vetoed": cli.EXIT_VETOED,
    "verification failed": cli.EXIT_VERIFY,
}


def hook_heading(name: str) -> str:
    parameters = inspect.signature(HOOKS[name]).parameters
    return f"{name}({', '.join(parameters)})"


def test_the_code_defines_what_these_tests_walk() -> None:
    assert len(HOOKS) >= 6
    assert len(SIGNAL_ATTRIBUTES) == len(signals.ALL)
    assert {"status", "check", "demo"} <= set(COMMANDS)
    assert sorted(EXIT_CODES.values()) == [0, 1, 2, 3, 4]


# -- 1. every hook has a heading with its real signature ----------------------------------


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_documented(hook: str) -> None:
    expected = hook_heading(hook)
    documented = headings(DOCS / "plugin_hooks.rst")
    same_name = [h for h in documented if h.split("(")[0] == hook]
    assert expected in documented, (
        f"docs/plugin_hooks.rst needs a heading {expected!r} for hookspec {hook}; "
        f"found {same_name or 'none'}"
    )


def test_hook_is_marked_as_a_spec() -> None:
    for name, function in HOOKS.items():
        assert hasattr(function, "dbguard_spec"), f"{name} lacks @hookspec"


def test_every_documented_hook_exists() -> None:
    documented = [h for h in headings(DOCS / "plugin_hooks.rst") if h.startswith("dbguard_")]
    stale = [h for h in documented if h.split("(")[0] not in HOOKS]
    assert not stale, f"docs/plugin_hooks.rst documents hooks that do not exist: {stale}"


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_section_has_an_example(hook: str) -> None:
    text = section(DOCS / "plugin_hooks.rst", hook_heading(hook))
    assert ".. code-block:: python" in text, f"{hook}: no example implementation"
    assert "from dbguard_plugin import hookimpl" in text
    assert f"def {hook}(" in text, f"{hook}: the example does not implement the hook"


# -- 2. every signal has a heading with its name -------------------------------------------


@pytest.mark.parametrize("name", sorted(SIGNAL_ATTRIBUTES))
def test_signal_is_documented(name: str) -> None:
    assert name in headings(DOCS / "signals.rst"), (
        f"docs/signals.rst needs a heading {name!r} (signals.{SIGNAL_ATTRIBUTES[name]})"
    )


@pytest.mark.parametrize("name", sorted(SIGNAL_ATTRIBUTES))
def test_signal_section_names_the_attribute(name: str) -> None:
    text = section(DOCS / "signals.rst", name)
    assert f"signals.{SIGNAL_ATTRIBUTES[name]}" in text
    assert "**extra" in text, f"{name}: the example receiver must accept **extra"


def test_every_documented_signal_exists() -> None:
    kebab = re.compile(r"^[a-z]+(-[a-z]+)+$")
    documented = [h for h in headings(DOCS / "signals.rst") if kebab.match(h)]
    stale = [h for h in documented if h not in SIGNAL_ATTRIBUTES]
    assert not stale, f"docs/signals.rst documents signals that do not exist: {stale}"


# -- 3. every hook and signal is exercised by a test ---------------------------------------


def _other_tests() -> str:
    return "\n".join(
        path.read_text(encoding="utf-8")
        for path in sorted(TESTS.glob("test_*.py"))
        if path.name != Path(__file__).name
    )


@pytest.mark.parametrize("hook", sorted(HOOKS))
def test_hook_is_exercised_by_a_test(hook: str) -> None:
    assert re.search(rf"\b{hook}\b", _other_tests()), (
        f"no tests/test_*.py besides test_docs.py mentions hook {hook}"
    )


@pytest.mark.parametrize("name", sorted(SIGNAL_ATTRIBUTES))
def test_signal_is_exercised_by_a_test(name: str) -> None:
    attribute = SIGNAL_ATTRIBUTES[name]
    pattern = rf"\b(?:{re.escape(attribute)}|{re.escape(name)})\b"
    assert re.search(pattern, _other_tests()), (
        f"no tests/test_*.py besides test_docs.py mentions signal {name} (signals.{attribute})"
    )


# -- 4. every command, option and exit code is documented ----------------------------------


@pytest.mark.parametrize("command", COMMANDS)
def test_command_is_documented(command: str) -> None:
    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    in_heading = any(
        h.strip("`").split()[:2] == ["dbguard", command] for h in headings(DOCS / "cli.rst")
    )
    assert in_heading or f"``dbguard {command}" in text, (
        f"docs/cli.rst does not document `dbguard {command}`"
    )


def _options(command: click.Command) -> list[str]:
    return [
        opt
        for param in command.params
        if isinstance(param, click.Option)
        for opt in param.opts + param.secondary_opts
    ]


@pytest.mark.parametrize("command", COMMANDS)
def test_help_lists_each_command_with_its_own_first_line(command: str) -> None:
    """``dbguard --help`` lists the commands from cli.COMMANDS without importing them:
    each line there must be the first line of the command's own help."""
    target = cli.cli.get_command(click.Context(cli.cli), command)
    assert target is not None
    assert target.name == command
    assert cli.COMMANDS[command][1] == target.get_short_help_str(limit=200)


@pytest.mark.parametrize("command", ["", *COMMANDS])
def test_command_options_are_documented(command: str) -> None:
    text = (DOCS / "cli.rst").read_text(encoding="utf-8")
    target = cli.cli.get_command(click.Context(cli.cli), command) if command else cli.cli
    missing = [opt for opt in _options(target) if f"``{opt}" not in text]
    assert not missing, f"docs/cli.rst does not document {missing} of dbguard {command}"


@pytest.mark.parametrize(("meaning", "code"), sorted(EXIT_CODES.items(), key=lambda i: i[1]))
def test_exit_code_is_in_the_table(meaning: str, code: int) -> None:
    table = section(DOCS / "cli.rst", "Exit codes")
    rows = {
        int(match.group(1)): match.group(2)
        for match in re.finditer(r"^(\d+)\s+(\S.*)$", table, re.MULTILINE)
    }
    assert code in rows, f"the exit code table in docs/cli.rst lacks {code} ({meaning})"
    assert rows[code].lower().startswith(meaning.split()[0]), (
        f"exit code {code} should read {meaning!r}, the docs say {rows[code]!r}"
    )


# -- the examples are Python ----------------------------------------------------------------


def _python_blocks(path: Path) -> list[tuple[int, str]]:
    return [(number, inspect.cleandoc("\n".join(body)))
            for number, body in code_blocks(path.read_text(encoding="utf-8"), "python")]


@pytest.mark.parametrize("page", sorted(p.name for p in DOCS.glob("*.rst")))
def test_python_examples_parse(page: str) -> None:
    for line, code in _python_blocks(DOCS / page):
        try:
            ast.parse(code)
        except SyntaxError as exc:
            pytest.fail(f"docs/{page}:{line}: example is not valid Python: {exc}")


# -- what the docs claim about installing, the strategy file, the demo and completion ------


def _freqtrade_minimum() -> str:
    setup = (ROOT / "setup.cfg").read_text(encoding="utf-8")
    found = re.search(r"^\s+freqtrade>=([\d.]+)", setup, re.MULTILINE)
    assert found, "setup.cfg has no freqtrade>= requirement in the freqtrade extra"
    return found.group(1)


@pytest.mark.parametrize("page", ["hosts/freqtrade.rst", "user-manual.rst", "README.md"])
def test_the_freqtrade_minimum_is_the_one_the_extra_allows(page: str) -> None:
    text = (ROOT / page if page == "README.md" else DOCS / page).read_text(encoding="utf-8")
    text = " ".join(text.split())
    claimed = re.findall(r"freqtrade (\d{4}\.\d+) or newer", text)
    assert set(claimed) <= {_freqtrade_minimum()}, (
        f"{page} says freqtrade {claimed} or newer; setup.cfg allows {_freqtrade_minimum()}")


def test_the_readme_counts_the_lines_of_the_documented_strategy_file() -> None:
    words = {"two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
    readme = " ".join((ROOT / "README.md").read_text(encoding="utf-8").split())
    said = re.search(r"(\w+)-line strategy file", readme)
    assert said, "README.md no longer says how long the strategy file is"
    text = section(DOCS / "hosts" / "freqtrade.rst", "The strategy file")
    after = text.split(".. code-block:: python\n", 1)[1].splitlines()
    code = list(itertools.takewhile(lambda line: not line or line.startswith(" "), after))
    assert words[said.group(1)] == len([line for line in code if line.strip()])


def test_the_quickstart_installs_from_a_checkout_without_placeholders() -> None:
    text = section(DOCS / "quickstart.rst", "Install")
    assert "<" not in text.replace("<Tab>", ""), "a placeholder in the install steps"
    assert "git clone" not in text
    assert "$ pip install .\n" in text


def _shape(line: str) -> str:
    """A transcript line without what differs between runs: numbers, temp names."""
    line = re.sub(r"dbguard-demo-\w+", "dbguard-demo-X", line)
    line = re.sub(r"sha256 [0-9a-f]+", "sha256 H", line)
    return re.sub(r"\d+", "0", line.rstrip())


def test_the_quickstart_demo_output_is_what_dbguard_demo_prints(run_cli) -> None:
    text = section(DOCS / "quickstart.rst", "See it work: ``dbguard demo``")
    block = text.split("   $ dbguard demo\n", 1)[1].split("\n\n", 1)[0]
    documented = [_shape(line[3:]) for line in block.splitlines()]
    ran = run_cli("demo")
    assert ran.returncode == 0, ran.stdout + ran.stderr
    assert documented == [_shape(line) for line in ran.stdout.splitlines()]


def test_shell_completion_is_documented_and_works(run_cli, child_env) -> None:
    text = section(DOCS / "cli.rst", "Shell completion")
    for shell in ("bash", "zsh", "fish"):
        assert f"_DBGUARD_COMPLETE={shell}_source dbguard" in text
    script = run_cli(env=child_env(_DBGUARD_COMPLETE="bash_source"))
    assert script.returncode == 0, script.stderr
    assert "_dbguard_completion()" in script.stdout
    completed = run_cli(env=child_env(_DBGUARD_COMPLETE="bash_complete",
                                      COMP_WORDS="dbguard pro", COMP_CWORD="1"))
    assert completed.stdout.split() == ["plain,profile"]


@pytest.mark.parametrize("key", sorted(config._VALIDATORS))
def test_config_key_is_documented(key: str) -> None:
    """Every key the config file accepts has its row in docs/configuration.rst."""
    text = (DOCS / "configuration.rst").read_text(encoding="utf-8")
    assert f"   * - ``{key}``" in text, f"docs/configuration.rst does not document {key}"

"""The ``.. code-block::`` blocks of reStructuredText, for the tests that run or parse the
documentation's examples (test_docs.py, test_runbook.py). A support module, not a test
module: no test module imports another."""

from __future__ import annotations


def code_blocks(text: str, language: str) -> list[tuple[int, list[str]]]:
    """Every ``.. code-block:: LANGUAGE`` in *text*: its line number (1-based, of the
    directive) and its body's lines as written, up to the first line indented no deeper
    than the directive."""
    lines = text.splitlines()
    blocks = []
    for number, line in enumerate(lines):
        if line.strip() != f".. code-block:: {language}":
            continue
        indent = len(line) - len(line.lstrip())
        body = []
        for following in lines[number + 1 :]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following)
        blocks.append((number + 1, body))
    return blocks

"""The README's examples run as written, and the docs' links resolve.

Every ```python block of README.md runs in a fresh interpreter, in an empty
working directory; a ```text block right after it is what it printed on
the machine the README names: another CPU trains to other last bits (and so
to other rollbacks), so the run must print lines of the same shapes (each
number free), starting and ending as the shown output does. A block that is
deliberately a fragment carries `<!-- fragment -->` on the line before it
and is skipped, saying so. Every relative link of README.md and docs/*.md
must point to an existing file (and, into a Markdown file, to an existing
heading).
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
FRAGMENT = "<!-- fragment -->"


def code_blocks(text, language="python"):
    """The ```language blocks of Markdown `text`, as dicts: `line` (1-based,
    of the opening fence), `code`, `fragment` (the line before the fence,
    blank lines skipped, is `<!-- fragment -->`) and `output` (the text of a
    ```text block that follows, blank lines skipped; None if none)."""
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].strip() != f"```{language}":
            i += 1
            continue
        end = lines.index("```", i + 1)
        before = [line for line in lines[:i] if line.strip()]
        after = end + 1
        while after < len(lines) and not lines[after].strip():
            after += 1
        output = None
        if after < len(lines) and lines[after].strip() == "```text":
            close = lines.index("```", after + 1)
            output = "\n".join(lines[after + 1 : close])
        blocks.append({"line": i + 1, "code": "\n".join(lines[i + 1 : end]),
                       "fragment": bool(before) and before[-1].strip() == FRAGMENT,
                       "output": output})  # fmt: skip
        i = end + 1
    return blocks


def test_code_blocks_parser():
    text = "\n".join([
        "intro", "```python", "print(1)", "```", "", "```text", "1", "```",
        FRAGMENT, "```python", "x.fit()", "```", "```bash", "ls", "```",
    ])  # fmt: skip
    assert code_blocks(text) == [
        {"line": 2, "code": "print(1)", "fragment": False, "output": "1"},
        {"line": 10, "code": "x.fit()", "fragment": True, "output": None},
    ]


README_BLOCKS = code_blocks(README.read_text())


def test_readme_has_an_executed_example_with_its_output():
    assert any(not b["fragment"] and b["output"] for b in README_BLOCKS)


@pytest.mark.parametrize("block", README_BLOCKS, ids=[f"line{b['line']}" for b in README_BLOCKS])
def test_readme_python_block_runs(block, tmp_path):
    if block["fragment"]:
        pytest.skip(f"README.md line {block['line']} is marked {FRAGMENT}: not run on its own")
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", block["code"]], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    if block["output"] is not None:
        printed, shown = result.stdout.rstrip("\n").splitlines(), block["output"].splitlines()
        shapes = [output_shape(line) for line in shown]
        assert all(any(shape.fullmatch(line) for shape in shapes) for line in printed), printed
        assert shapes[0].fullmatch(printed[0]) and shapes[-1].fullmatch(printed[-1]), printed


def output_shape(line):
    """A line of shown output as a pattern in which every number is free."""
    parts = re.split(r"\d[\d,]*(?:\.\d+)?", line)
    return re.compile(r"\d[\d,]*(?:\.\d+)?".join(re.escape(part) for part in parts))


def test_output_shapes_free_the_numbers_only():
    shape = output_shape("generation 2: 9,741 synapses, val_accuracy 0.9694, rolled back")
    assert shape.fullmatch("generation 1: 18,509 synapses, val_accuracy 0.9805, rolled back")
    assert not shape.fullmatch("generation 1: 18,509 synapses, val_accuracy 0.9805")
    assert not shape.fullmatch("generation x: 18,509 synapses, val_accuracy 0.9805, rolled back")


MARKDOWN = [README, *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
REFERENCE = re.compile(r"^\s*\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+\"[^\"]*\")?\s*$", re.M)


def _without_fences(text):
    return re.sub(r"^```.*?^```[ \t]*$", "", text, flags=re.M | re.S)


def _prose(text):
    """`text` without fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", _without_fences(text))


def _anchors(path):
    """GitHub's heading anchors of a Markdown file (lower case, punctuation
    but `-` and `_` dropped, spaces to `-`, `-1`, `-2`... for repeats)."""
    anchors, seen = set(), {}
    for heading in re.findall(r"^#{1,6}[ \t]+(.*?)[ \t#]*$", _without_fences(path.read_text()),
                              re.M):  # fmt: skip
        slug = re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def relative_links(path):
    """`(target, anchor)` of every relative link in Markdown file `path`."""
    text = _prose(path.read_text())
    for target in LINK.findall(text) + REFERENCE.findall(text):
        if re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        yield file, anchor


@pytest.mark.parametrize("path", MARKDOWN, ids=[str(p.relative_to(ROOT)) for p in MARKDOWN])
def test_relative_links_resolve(path):
    broken = []
    for file, anchor in relative_links(path):
        target = (path.parent / file).resolve() if file else path
        if not target.exists():
            broken.append(f"{file} (no such file)")
        elif anchor and target.suffix == ".md" and anchor not in _anchors(target):
            broken.append(f"{file}#{anchor} (no such heading)")
    assert not broken, f"{path.relative_to(ROOT)}: {broken}"


def test_link_checker_sees_links():
    links = list(relative_links(README))
    assert ("docs/results.md", "") in links
    assert ("benchmarks/results/detectnet_evolve.png", "") in links  # the picture
    assert ("docs/results.md", "quick-start-demo") in links
    assert all(not file.startswith("http") for file, _ in links)

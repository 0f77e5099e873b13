"""`python -m recipes.quickstart`: its flags, what `--fresh` deletes, the
table it prints (the README's), and, behind `-m slow`, that it is seeded and
says what a rerun does."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from recipes import quickstart

ROOT = Path(__file__).resolve().parents[1]


def run_quickstart(*args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    return subprocess.run([sys.executable, "-m", "recipes.quickstart", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)  # fmt: skip


def table_lines(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def readme_demo_table():
    """The first table of the README whose header is the demo's."""
    lines = (ROOT / "README.md").read_text().splitlines()
    header = quickstart.printed_table([]).splitlines()[0]
    start = lines.index(header)
    end = start
    while end < len(lines) and lines[end].startswith("|"):
        end += 1
    return lines[start:end]


def test_help_lists_the_flags():
    result = run_quickstart("--help", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    for flag in ("--out_dir", "--generations", "--[no]fresh"):
        assert flag in result.stdout
    assert "Quick start demo (about 1 minute on 2 CPU cores)" in result.stdout  # the docstring


def test_remove_outputs_deletes_only_what_a_run_writes(tmp_path):
    (tmp_path / "lineage").mkdir()
    (tmp_path / "lineage" / "lineage.jsonl").write_text("{}\n")
    for name in ("int4_g001_int8.tflite", "lineage.md", "lineage.json", "lineage.png",
                 "notes.txt", "model.keras"):  # fmt: skip
        (tmp_path / name).write_text("x")
    removed = quickstart.remove_outputs(str(tmp_path))
    assert [os.path.basename(p) for p in removed] == [
        "int4_g001_int8.tflite", "lineage", "lineage.json", "lineage.md", "lineage.png"]
    assert sorted(os.listdir(tmp_path)) == ["model.keras", "notes.txt"]
    assert quickstart.remove_outputs(str(tmp_path / "missing")) == []


def test_printed_table_has_the_readme_columns():
    rows = [{"lineage": "int4", "generation": 2, "rollbacks": 1, "bits": 4, "synapses": 16430,
             "filters": 145, "macs": 87908, "synaptic_efficiency": 1.7, "metric": 0.98328,
             "latency_ms": 0.005, "size_bytes": 27584}]  # fmt: skip
    lines = quickstart.printed_table(rows).splitlines()
    assert lines[0] == ("| lineage | generation | rollbacks | synapses | filters | macs "
                        "| synaptic_efficiency | accuracy | size_bytes |")  # fmt: skip
    assert lines[2] == "| int4 | 2 | 1 | 16,430 | 145 | 87,908 | 1.70x | 0.9833 | 27,584 |"
    table = readme_demo_table()
    assert table[0] == lines[0] and len(table) == 2 + 7  # ancestors, generations 0-4


def _records(directory):
    with open(os.path.join(directory, "lineage", "lineage.jsonl")) as f:
        return [{k: v for k, v in json.loads(line).items() if k != "wall_time"} for line in f]


@pytest.mark.slow
def test_seeded_rerun_and_fresh(tmp_path):
    """The README's demo table (its columns and rows: the numbers are one
    CPU's, another trains to other last bits); a rerun says the lineage is
    complete; `--fresh` starts again and gets the same lineage; a damaged
    lineage ends in one error line (~3.5 min on 2 busy cores)."""
    out = tmp_path / "qs"
    first = run_quickstart(f"--out_dir={out}")
    assert first.returncode == 0, first.stderr[-2000:]
    shown, printed = readme_demo_table(), table_lines(first.stdout)
    assert printed[:2] == shown[:2] and len(printed) == len(shown)
    assert [row.split(" | ")[:2] for row in printed] == [row.split(" | ")[:2] for row in shown]
    records = _records(out)
    assert [r["generation"] for r in records if r["accepted"]] == [0, 1, 2, 3, 4]

    again = run_quickstart(f"--out_dir={out}")
    assert again.returncode == 0, again.stderr[-2000:]
    said = [line for line in again.stdout.splitlines() if "--fresh" in line]
    assert len(said) == 1 and "already holds this complete lineage" in said[0]
    assert "EvolutionCallback: generation" not in again.stdout  # nothing evolved
    assert table_lines(again.stdout) == table_lines(first.stdout)

    (out / "notes.txt").write_text("kept")
    fresh = run_quickstart(f"--out_dir={out}", "--fresh")
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    assert f"--fresh: deleted 11 previous output(s) in {out}" in fresh.stdout
    assert "EvolutionCallback: generation 4/4" in fresh.stdout
    assert (out / "notes.txt").read_text() == "kept"
    assert _records(out) == records  # two fresh runs, one lineage
    assert table_lines(fresh.stdout) == table_lines(first.stdout)

    # a lineage damaged before its last line: one error line that names the
    # file and says how to start afresh
    log = out / "lineage" / "lineage.jsonl"
    lines = log.read_text().splitlines()
    log.write_text("\n".join([lines[0], '{"generation": 1, "acc', *lines[1:]]) + "\n")
    damaged = run_quickstart(f"--out_dir={out}")
    assert damaged.returncode == 1
    errors = [line for line in damaged.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "lineage.jsonl" in errors[0] and "--fresh" in errors[0], errors
    assert "Traceback" not in damaged.stderr

"""Lineage directory: log, settings, checkpoints, plot (keras_evosynth.lineage)."""

import hashlib
import json
import os

import keras
import numpy as np
import pytest

from keras_evosynth import lineage as lineage_lib
from keras_evosynth.lineage import Lineage, check_writable, read_lineage
from keras_evosynth.plotting import plot_lineage


def digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_log_only_grows_and_is_json_lines(tmp_path):
    lin = Lineage(tmp_path / "run")
    assert lin.open({"seed": 1, "protect": ("a",)}) == []
    lin.append({"generation": 0, "fitness": np.float32(0.5), "bad": float("nan")})
    lin.append({"generation": 1, "metrics": {"loss": np.float64(0.25)}})
    lines = (tmp_path / "run" / "lineage.jsonl").read_text().splitlines()
    assert [json.loads(line)["generation"] for line in lines] == [0, 1]
    records = read_lineage(tmp_path / "run")
    assert records[0]["fitness"] == 0.5 and records[0]["bad"] is None
    assert records[1]["metrics"] == {"loss": 0.25}
    # Nothing temporary is left behind.
    assert sorted(os.listdir(tmp_path / "run")) == ["evolution.json", "lineage.jsonl"]


def test_damaged_log_or_settings_name_the_file_and_line(tmp_path):
    lin = Lineage(tmp_path / "run")
    lin.open({"seed": 1})
    lin.append({"generation": 0})
    log = tmp_path / "run" / "lineage.jsonl"
    log.write_text(log.read_text() + '{"generation": 1, "synap\n{"generation": 2}\n')
    with pytest.raises(ValueError, match=r"lineage.jsonl is damaged at line 2 .*delete it"):
        read_lineage(tmp_path / "run")
    log.write_text('{"generation": 0}\n[1, 2]\n\n{"generation": 2}\n')
    with pytest.raises(ValueError, match="line 2 .a record must be a JSON object, found list"):
        lin.records()
    (tmp_path / "run" / "evolution.json").write_text('{"seed": ')
    with pytest.raises(ValueError, match="evolution.json are damaged"):
        lin.open({"seed": 1})


INTACT = '{"generation": 0, "synapses": 100}\n{"generation": 1, "synapses": 60}\n'


@pytest.mark.parametrize("tail", [
    b'{"generation": 2, "synap',  # cut inside a record, no newline
    b'{"generation": 2, "synap\n\n',  # cut, then blank lines
    b"[1, 2]",  # JSON, but not a record
    b"\x00\x00\x00\x00",  # a file system's zero-filled tail
    b'{"generation": 2, "name": "\xc3',  # cut inside a UTF-8 character
])
def test_torn_last_line_is_dropped_with_one_warning_and_repaired(tmp_path, tail):
    log = tmp_path / "lineage.jsonl"
    log.write_bytes(INTACT.encode() + tail)
    with pytest.warns(RuntimeWarning) as caught:
        records = read_lineage(tmp_path)  # a plain reader leaves the file alone
    assert [str(w.message) for w in caught] == [
        f"Lineage log {log}: line 3, the last, is a partial record (the process writing it "
        "was killed); dropped it. The records before it and their checkpoints are intact."]
    assert records == [{"generation": 0, "synapses": 100}, {"generation": 1, "synapses": 60}]
    assert log.read_bytes().startswith(INTACT.encode()) and len(log.read_bytes()) > len(INTACT)
    lin = Lineage(tmp_path)
    with pytest.warns(RuntimeWarning, match="dropped it from the file") as caught:
        assert lin.open({}) == records  # resuming repairs the file
    assert len(caught) == 1
    assert log.read_text() == INTACT
    assert sorted(os.listdir(tmp_path)) == ["evolution.json", "lineage.jsonl"]
    lin.append({"generation": 2, "synapses": 30})  # on a clean line
    assert [r["synapses"] for r in read_lineage(tmp_path)] == [100, 60, 30]


def test_append_after_a_torn_line_drops_it(tmp_path):
    log = tmp_path / "lineage.jsonl"
    log.write_text(INTACT + '{"generation": 2, "syn')
    with pytest.warns(RuntimeWarning, match="line 3, the last, is a partial record") as caught:
        Lineage(tmp_path).append({"generation": 2, "synapses": 30})
    assert len(caught) == 1
    assert log.read_text() == INTACT + '{"generation": 2, "synapses": 30}\n'


def test_only_torn_line_leaves_an_empty_log(tmp_path):
    log = tmp_path / "lineage.jsonl"
    log.write_text('{"generation": 0, "synap')
    with pytest.warns(RuntimeWarning, match="line 1, the last"):
        assert Lineage(tmp_path).open({}) == []
    assert log.read_bytes() == b""


KILLED_WRITER = """
import json, os, signal, sys
path = sys.argv[1]
with open(path, "a") as f:  # two complete records, on disk
    for g, synapses in ((0, 1000), (1, 700)):
        f.write(json.dumps({"generation": g, "synapses": synapses}) + "\\n")
    f.flush()
    os.fsync(f.fileno())
record = (json.dumps({"generation": 2, "synapses": 400, "metrics": list(range(2000))})
          + "\\n").encode()
fd = os.open(path, os.O_WRONLY | os.O_APPEND)
for start in range(0, len(record) // 2, 64):  # an appender in many small writes
    os.write(fd, record[start:start + 64])
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_recovers_from_a_writer_killed_mid_record(tmp_path):
    import signal
    import subprocess
    import sys

    log = tmp_path / "lineage.jsonl"
    done = subprocess.run([sys.executable, "-c", KILLED_WRITER, str(log)], timeout=60)
    assert done.returncode == -signal.SIGKILL
    torn = log.read_bytes()
    assert torn.count(b"\n") == 2 and not torn.endswith(b"\n")  # killed mid-record
    with pytest.warns(RuntimeWarning, match="line 3, the last, is a partial record") as caught:
        records = Lineage(tmp_path).open({})
    assert len(caught) == 1
    assert records == [{"generation": 0, "synapses": 1000}, {"generation": 1, "synapses": 700}]
    assert log.read_bytes() == torn[: torn.rindex(b"\n") + 1]


def test_other_settings_are_refused_and_nothing_changes(tmp_path):
    lin = Lineage(tmp_path)
    lin.open({"seed": 1, "generations": 3})
    lin.append({"generation": 0})
    before = {name: digest(tmp_path / name) for name in os.listdir(tmp_path)}
    with pytest.raises(ValueError, match=r"seed: stored 1, now 2"):
        Lineage(tmp_path).open({"seed": 2, "generations": 3})
    after = {name: digest(tmp_path / name) for name in os.listdir(tmp_path)}
    assert before == after
    # Same settings: the records come back.
    assert Lineage(tmp_path).open({"seed": 1, "generations": 3}) == [{"generation": 0}]


def test_checkpoints_never_overwrite(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    lin = Lineage(tmp_path)
    lin.open({})
    (tmp_path / "generation_001.keras").write_bytes(b"someone else's file")
    assert lin.save_model(model, 0) == "generation_000.keras"
    assert lin.save_model(model, 1) == "generation_001-1.keras"
    assert lin.save_model(model, 1) == "generation_001-2.keras"
    assert (tmp_path / "generation_001.keras").read_bytes() == b"someone else's file"
    loaded = keras.saving.load_model(lin.path("generation_001-2.keras"))
    np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".tmp")]


def test_failed_save_leaves_no_file(tmp_path):
    class Broken:
        def save(self, path):
            with open(path, "w") as f:
                f.write("half")
            raise OSError("disk full")

    lin = Lineage(tmp_path)
    lin.open({})
    with pytest.raises(OSError, match="disk full"):
        lin.save_model(Broken(), 0)
    assert sorted(os.listdir(tmp_path)) == ["evolution.json"]


def test_check_writable(tmp_path):
    check_writable(tmp_path / "new" / "deeper")  # creatable: fine
    assert not (tmp_path / "new").exists()  # and nothing created
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(ValueError, match="not a directory"):
        check_writable(a_file)
    with pytest.raises(ValueError, match="not writable"):
        check_writable(a_file / "sub")


def _check_as_nobody(directory):
    """Runs `check_writable(directory)` in a forked child with the uid and gid
    of `nobody` (root may write anywhere, so CI's root cannot see the
    refusal): its exit status is 0 (fine), 3 (ValueError) or 4 (else)."""
    pid = os.fork()
    if pid == 0:  # the child: no exec, Python and the module are already loaded
        code = 4
        try:
            os.setgid(65534)
            os.setuid(65534)
            check_writable(directory)
            code = 0
        except ValueError:
            code = 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def test_check_writable_read_only(tmp_path):
    if os.geteuid() != 0:
        tmp_path.chmod(0o500)
        try:
            with pytest.raises(ValueError, match="not writable"):
                check_writable(tmp_path / "run")
        finally:
            tmp_path.chmod(0o700)
        return
    import tempfile

    read_only, writable = tempfile.mkdtemp(), tempfile.mkdtemp()
    try:
        os.chmod(read_only, 0o755)  # root's, so nobody may enter but not write
        os.chmod(writable, 0o777)
        assert _check_as_nobody(os.path.join(writable, "run")) == 0  # the child can pass
        assert _check_as_nobody(os.path.join(read_only, "run")) == 3
    finally:
        os.rmdir(read_only)
        os.rmdir(writable)


def test_plot_lineage(tmp_path):
    pytest.importorskip("matplotlib")
    records = [
        {
            "generation": 0,
            "synapses": 1000,
            "fitness": 0.9,
            "accepted": True,
            "metrics": {"val_accuracy": 0.9},
        },
        {
            "generation": 1,
            "synapses": 600,
            "fitness": 0.88,
            "accepted": True,
            "metrics": {"val_accuracy": 0.88},
        },
        {
            "generation": 2,
            "synapses": 200,
            "fitness": 0.5,
            "accepted": False,
            "metrics": {"val_accuracy": 0.5},
        },
    ]
    lin = Lineage(tmp_path)
    lin.open({})
    for r in records:
        lin.append(r)
    ax = plot_lineage(tmp_path, metric="val_accuracy", path=tmp_path / "plot.png")
    x, y = ax.lines[0].get_data()
    assert list(x) == [1000, 600] and list(y) == [0.9, 0.88]
    assert list(ax.lines[1].get_data()[0]) == [200]
    assert (tmp_path / "plot.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="no records"):
        plot_lineage([])


def test_clean_converts_numpy_and_non_finite():
    assert lineage_lib._clean({"a": np.int64(3), "b": [np.float32(np.inf)]}) == {
        "a": 3,
        "b": [None],
    }

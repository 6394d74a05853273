"""The benchmark scripts the README's Performance figures come from run as documented (on short
inputs here; the figures themselves come from their full runs, see benchmarks/README.md)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile

ROOT = Path(__file__).resolve().parents[1]
SHIPPED_SELD = ROOT / "plugins" / "seld" / "weights" / "seld-respeaker-4mic.eab"


def _script(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args],
                          capture_output=True, text=True, check=False, timeout=600)


def test_offline_peak_reports_the_peak_of_a_whole_file_run(tmp_path):
    done = _script("offline_peak.py", "--hours", "0.01", "--bundle", str(SHIPPED_SELD), "--work", str(tmp_path))
    assert done.returncode == 0, done.stderr
    found = re.fullmatch(r"0\.01 h of 4-channel audio, onnxruntime: peak RSS (\d+) MB, 360 result lines, \d+ s\n", done.stdout)
    assert found and 20 < int(found.group(1)) < 1000, done.stdout
    info = soundfile.info(str(tmp_path / "scene-looped-0.01h.wav"))
    assert (info.frames, info.channels, info.samplerate, info.subtype) == (36 * 16000, 4, 16000, "PCM_16")


def test_offline_peak_refuses_a_silly_length():
    done = _script("offline_peak.py", "--hours", "0")
    assert done.returncode != 0 and "error: --hours must be above 0" in done.stderr


@pytest.mark.slow
def test_overhead_table_prints_the_bench_table(tmp_path):
    done = _script("overhead_table.py", "--runs", "1", "--tasks", "seld", "--work", str(tmp_path))
    assert done.returncode == 0, done.stderr
    rows = [line for line in done.stdout.splitlines() if line.startswith("| seld |")]
    assert [row.split(" | ")[1] for row in rows] == ["onnxruntime", "openvino"]
    for row in rows:
        cells = row.strip("| ").split(" | ")
        assert len(cells) == 10 and cells[4] == "100 ms", row
        assert 0.5 < float(cells[3]) < 5 and 0.5 < float(cells[6]) < 5, row  # the two x bare ratios: sane, not timed


def test_overhead_table_refuses_an_unknown_task():
    done = _script("overhead_table.py", "--tasks", "seld,nope")
    assert done.returncode != 0 and "error: unknown task(s) nope" in done.stderr

"""benchmarks/layer_flops.py's tables say only what was measured (issue 26, point 6)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import layer_flops  # noqa: E402

META = {"date": "2026-12-03", "torch": "2.13.0", "cpu": "x86_64", "threads": 2, "model_repeats": 1,
        "native": "ok", "model_size": 256, "full": True}
BSSTNET_ROW = {"name": "bsstnet", "frames": 8, "flops_frames": 8, "params": 38_463_754,
               "frozen_params": 5_257_536, "gmacs_256": 130.3, "gmacs_720p": 2171.0, "paper": "133",
               "gmacs_256_with_flow_estimator": 168.0, "gmacs_720p_with_flow_estimator": 2709.0}


def test_models_only_run_prints_no_empty_layer_table():
    text = layer_flops.to_markdown([], META)
    assert "| name | input |" not in text and "Native status: ok." in text


def test_flow_note_mentions_the_timed_forward_only_when_there_was_one():
    untimed = layer_flops.models_to_markdown([BSSTNET_ROW], META)
    timed = layer_flops.models_to_markdown([{**BSSTNET_ROW, "native_ms": 1.0, "reference_ms": 2.0}], META)
    assert "with its own flow estimator 168.0 at 256²" in untimed
    assert "timed forward" not in untimed and "The timed forward estimates its flows." in timed


def test_the_quick_run_labels_its_model_times():
    quick = layer_flops.models_to_markdown([BSSTNET_ROW], {**META, "model_size": 64, "full": False})
    assert "1x T x 3 x 64 x 64" in quick and "**quick run**" in quick
    assert "quick run" not in layer_flops.models_to_markdown([BSSTNET_ROW], META)


def test_nothing_is_written_without_save(capsys):
    results = layer_flops.RESULTS / "layer_flops.md"
    before = results.stat().st_mtime_ns if results.exists() else None
    layer_flops.ROWS, rows = layer_flops.ROWS[:2], layer_flops.ROWS
    try:
        layer_flops.main(["--skip-latency", "--only", "layers"])
    finally:
        layer_flops.ROWS = rows
    out = capsys.readouterr().out
    assert "[1/2, " in out and "[2/2, " in out and "written to" not in out
    assert (results.stat().st_mtime_ns if results.exists() else None) == before

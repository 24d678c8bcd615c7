"""benchmarks/layer_flops.py's tables say only what was measured (issue 26, point 6)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import layer_flops  # noqa: E402

META = {"date": "2026-12-03", "torch": "2.13.0", "cpu": "x86_64", "threads": 2, "model_repeats": 1,
        "native": "ok"}
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

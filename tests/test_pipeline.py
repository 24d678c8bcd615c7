"""deblurlayers.pipeline and the ``restore`` / ``evaluate`` commands, end to end on synthetic data."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deblurlayers.__main__ import main
from deblurlayers.data import list_frames, read_image
from deblurlayers.metrics import quantize
from deblurlayers.models import get_model_card
from deblurlayers.pipeline import FrameSource, Restorer, clip_plan, window_plan
from model_cases import CASES, small
from synthetic import make_dataset, sequence, write_frames

pytest.importorskip("PIL")


# -- plans ----------------------------------------------------------------------------------------
def _erdn_border(n):
    """ERDN's --border, as its spec states it: f0 f1 | f0 f1 ... f(n-2) f(n-1) | f(n-2) f(n-1)."""
    return [0, 1] + list(range(n)) + [n - 2, n - 1]


@pytest.mark.parametrize("length", [2, 3, 5, 8])
@pytest.mark.parametrize("per_step", [1, 2, 3])
def test_window_plan_is_erdns_border_windows(length, per_step):
    steps = window_plan(length, per_step)
    assert [f for s in steps for f in s.outputs] == list(range(length))
    extended = _erdn_border(length)
    for step in steps:
        for frame, k in zip(step.outputs, step.keep):
            assert list(step.inputs[k:k + 5]) == extended[frame:frame + 5]


def test_window_plan_of_one_frame_repeats_it():
    assert [s.inputs for s in window_plan(1)] == [(0, 0, 0, 0, 0)]


@pytest.mark.parametrize("length,clips", [
    (100, [(0, 29), (30, 59), (60, 89), (70, 99)]),
    (134, [(0, 29), (30, 59), (60, 89), (90, 119), (104, 133)]),
    (77, [(0, 29), (30, 59), (47, 76)]),
])
def test_dstnet_clips_as_the_official_dataset(length, clips):
    """Non-overlapping 30-frame clips plus one ending with the video; overlap frames come from the
    earlier clip (merge_full.py)."""
    steps = clip_plan(length, 30)
    assert [(s.inputs[0], s.inputs[-1]) for s in steps] == clips
    assert [f for s in steps for f in s.outputs] == list(range(length))
    assert steps[-1].outputs[0] == clips[-2][1] + 1


def test_bsstnet_clips_keep_frames_away_from_inner_ends():
    steps = clip_plan(100, 48, 44, 2)
    assert [(s.inputs[0], s.outputs[0], s.outputs[-1]) for s in steps] == [(0, 0, 45), (44, 46, 89), (52, 90, 99)]


@pytest.mark.parametrize("call,match", [
    (lambda: window_plan(0), r"length: expected an int >= 1, got 0"),
    (lambda: window_plan(3, 0), r"windows_per_step: expected an int >= 1"),
    (lambda: clip_plan(10, 4, 5), r"clip_stride: expected at most clip_frames=4"),
    (lambda: clip_plan(10, 4, 2, 2), r"margin: expected an int in \[0, clip_frames/2\)"),
])
def test_plan_bad_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


# -- the Restorer against the model called by hand -----------------------------------------------
def _memory_source(frames, log=None):
    holder = {}

    def read(i):
        if log is not None:
            log.append(holder["source"].cached)
        return frames[i]

    source = FrameSource(len(frames), [f"{i:03d}" for i in range(len(frames))], read, False, str)
    holder["source"] = source
    return source


def _by_hand(name, model, frames, frames_per_clip):
    """Every frame restored as the paper's test code would, written out independently of the plans."""
    card = get_model_card(name)
    n = len(frames)
    with torch.inference_mode():
        if card.output != "clip":
            extended = frames[_erdn_border(n)]
            out = []
            for f in range(n):
                window = extended[f:f + 5]
                if card.frames_in == 3:
                    window = window[1:4]
                out.append(model(window[None])[0])
            return torch.stack(out)
        starts = list(range(0, n - frames_per_clip, frames_per_clip)) + [n - frames_per_clip]
        out = torch.zeros_like(frames)
        done = [False] * n
        for s in starts:
            clip = frames[s:s + frames_per_clip][None]
            result = model.restore(clip, tile=32, overlap=0, frames_per_clip=None) if name == "bsstnet" else model(clip)
            for k in range(frames_per_clip):
                if not done[s + k]:
                    out[s + k], done[s + k] = result[0, k], True
        return out


@pytest.mark.parametrize("name", list(CASES))
def test_restorer_equals_the_model_run_by_hand(name):
    frames = torch.rand(7, 3, 24, 32, generator=torch.Generator().manual_seed(0))
    model = small(name).eval()
    card = get_model_card(name)
    clip_model = card.output == "clip"
    kwargs = dict(frames_per_clip=3) if clip_model else dict(windows_per_pass=3)
    expected = _by_hand(name, model, frames, 3)  # eager, NCHW: the Restorer runs channels-last
    log = []
    restored = dict(Restorer(model, card, **kwargs).run(_memory_source(frames, log)))
    assert sorted(restored) == list(range(7))
    assert torch.allclose(torch.stack([restored[i] for i in range(7)]), expected, atol=2e-5)
    # memory: one pass's frames at most (a window model's batch of windows: 3 + 4 frames)
    assert max(log) < (3 if clip_model else 7)


@pytest.mark.parametrize("name", ["stdanet", "erdn"])
def test_window_output_does_not_depend_on_windows_per_pass(name):
    frames = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    model, card = small(name).eval(), get_model_card(name)
    runs = [dict(Restorer(model, card, windows_per_pass=k).run(_memory_source(frames))) for k in (1, 2, 6)]
    for other in runs[1:]:
        assert all(torch.allclose(runs[0][i], other[i], atol=1e-5) for i in range(6))


def test_memory_stays_flat_over_a_long_video():
    frames = torch.rand(60, 3, 16, 16)
    for name, kwargs, bound in [("dstnet", dict(frames_per_clip=5), 5), ("stdanet", dict(windows_per_pass=2), 6)]:
        log = []
        for _ in Restorer(small(name), get_model_card(name), **kwargs).run(_memory_source(frames, log)):
            pass
        assert max(log) < bound


@pytest.mark.parametrize("kwargs,match", [
    (dict(tile=0), r"tile: expected None or an int >= 1, got 0"),
    (dict(tile=32, overlap=32), r"overlap: expected less than tile=32, got 32"),
    (dict(dtype="fp8"), r"dtype: expected one of"),
    (dict(windows_per_pass=0), r"windows_per_pass: expected an int >= 1"),
])
def test_restorer_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Restorer(small("dstnet"), get_model_card("dstnet"), **kwargs)


def test_restorer_runs_channels_last_on_the_cpu_unless_asked_not_to():
    card = get_model_card("dstnet")
    for channels_last, expected in [(None, True), (True, True), (False, False)]:
        model = small("dstnet")
        Restorer(model, card, channels_last=channels_last)
        weight = model.feat_extractor.weight
        assert (not weight.is_contiguous() and weight.is_contiguous(memory_format=torch.channels_last)) == expected
    with pytest.raises(TypeError, match=r"channels_last: expected None, True or False, got 'yes'"):
        Restorer(small("dstnet"), card, channels_last="yes")


def test_frames_per_clip_is_for_clip_models_only():
    with pytest.raises(ValueError, match=r"frames_per_clip: only for clip models; stdanet restores one frame per 5"):
        Restorer(small("stdanet"), get_model_card("stdanet"), frames_per_clip=8)


# -- python -m deblurlayers restore -------------------------------------------------------------
DSTNET = ["--config", "num_feat=8", "--config", "num_blocks=1", "--config", "num_cwgdn=1"]


def _frames_folder(tmp_path, length=7, height=32, width=48):
    blurry, _ = sequence(length, height, width, seed=5)
    write_frames(tmp_path / "in", blurry, "frame{}.png", first=8)  # frame8 .. frame14: natural order matters
    return tmp_path / "in", blurry


def _run(capsys, *argv):
    code = main(list(map(str, argv)))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_restore_a_folder_equals_the_library(tmp_path, capsys):
    folder, blurry = _frames_folder(tmp_path)
    code, _, err = _run(capsys, "restore", "dstnet", folder, tmp_path / "out", *DSTNET, "--frames-per-clip", 3)
    assert code == 0, err
    assert "untrained" in err and "restored 7 frames" in err
    written = list_frames(tmp_path / "out")
    assert [p.name for p in written] == [f"frame{i}.png" for i in range(8, 15)]
    torch.manual_seed(0)
    model = small("dstnet")
    ordered = torch.stack([read_image(p) for p in list_frames(folder)])
    expected = dict(Restorer(model, get_model_card("dstnet"), frames_per_clip=3).run(_memory_source(ordered)))
    for i, path in enumerate(written):
        assert torch.equal(read_image(path), quantize(expected[i]).float() / 255)


def test_restore_memory_format_contiguous_gives_the_same_frames(tmp_path, capsys):
    folder, _ = _frames_folder(tmp_path, length=5)
    outs = {}
    for layout in ("auto", "contiguous"):
        code, _, err = _run(capsys, "restore", "dstnet", folder, tmp_path / layout, *DSTNET, "--frames-per-clip", 3,
                            "--memory-format", layout)
        assert code == 0, err
        outs[layout] = torch.stack([read_image(p) for p in list_frames(tmp_path / layout)])
    # 8-bit frames: the layouts' fp32 summation orders may round a value across a level
    assert (outs["auto"] - outs["contiguous"]).abs().max() <= 1 / 255 + 1e-6
    with pytest.raises(SystemExit) as exit_:  # argparse's own refusal of a choice
        main(list(map(str, ["restore", "dstnet", folder, tmp_path / "x", *DSTNET, "--memory-format", "nhwc"])))
    assert exit_.value.code == 2 and "--memory-format" in capsys.readouterr().err and not (tmp_path / "x").exists()


def test_resume_restores_only_what_is_missing(tmp_path, capsys):
    folder, _ = _frames_folder(tmp_path)
    out = tmp_path / "out"
    args = ["restore", "stdanet", folder, out, "--config", "channels=8", "--config", "num_points=2", "--batch", 2]
    assert _run(capsys, *args)[0] == 0
    before = {p.name: p.read_bytes() for p in list_frames(out)}
    (out / "frame9.png").unlink()
    (out / "frame13.png").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in list_frames(out)}
    code, _, err = _run(capsys, *args, "--resume")
    assert code == 0 and "restored 4 frames (3 already there)" in err  # two passes of 2 windows
    assert {p.name: p.read_bytes() for p in list_frames(out)} == before
    assert stamps["frame14.png"] == (out / "frame14.png").stat().st_mtime_ns


def test_an_interrupted_run_leaves_only_whole_frames(tmp_path, capsys, monkeypatch):
    folder, _ = _frames_folder(tmp_path)
    calls = []
    original = Restorer.forward

    def failing(self, clip, step):
        calls.append(step)
        if len(calls) == 3:
            raise RuntimeError("killed")
        return original(self, clip, step)

    monkeypatch.setattr(Restorer, "forward", failing)
    code, _, err = _run(capsys, "restore", "stdanet", folder, tmp_path / "out", "--config", "channels=8",
                        "--config", "num_points=2", "--batch", 2)
    assert code == 2 and "killed" in err
    assert sorted(os.listdir(tmp_path / "out")) == ["frame10.png", "frame11.png", "frame8.png", "frame9.png"]
    assert all(read_image(p).shape == (3, 32, 48) for p in list_frames(tmp_path / "out"))


def test_restore_video_in_and_out(tmp_path, capsys):
    pytest.importorskip("av")
    folder, _ = _frames_folder(tmp_path, length=5)
    code, _, err = _run(capsys, "restore", "dstnet", folder, tmp_path / "out.mp4", *DSTNET, "--quiet")
    assert code == 0, err
    code, _, err = _run(capsys, "restore", "dstnet", tmp_path / "out.mp4", tmp_path / "frames", *DSTNET, "--quiet")
    assert code == 0, err
    assert [p.name for p in list_frames(tmp_path / "frames")] == [f"{i:06d}.png" for i in range(5)]


def _bad_restore_cases(tmp_path):
    folder, _ = _frames_folder(tmp_path, length=3)
    empty = tmp_path / "empty"
    empty.mkdir()
    broken = tmp_path / "broken"
    write_frames(broken, torch.rand(2, 3, 16, 16))
    (broken / "000002.png").write_text("not a png")
    sizes = tmp_path / "sizes"
    write_frames(sizes, torch.rand(2, 3, 16, 16))
    write_frames(sizes, torch.rand(1, 3, 16, 24), first=2)
    stdanet = tmp_path / "stdanet.pth"
    torch.save(small("stdanet").state_dict(), stdanet)
    one = tmp_path / "one"
    write_frames(one, torch.rand(1, 3, 16, 16))
    return [
        (["stdanet", tmp_path / "missing"], r"input: .*missing not found"),
        (["stdanet", empty], r"input: .*empty holds no image files"),
        (["stdanet", broken], r"000002.png: not a readable image"),
        (["stdanet", sizes], r"000002.png: frame of size \(16, 24\), but 000000.png is \(16, 16\)"),
        (["dstnet", folder, "--weights", stdanet, *DSTNET], r"load_official: the checkpoint does not match DSTNet"),
        (["sharpnet", folder], r"name: expected one of \["),
        (["dstnet", folder, "--config", "num_feat"], r"--config: expected KEY=VALUE, got 'num_feat'"),
        (["stdanet", folder, "--frames-per-clip", "8"], r"frames_per_clip: only for clip models"),
        (["bsstnet", one], r"input: bsstnet needs videos of at least 2 frames, got 1"),
        (["bsstnet", folder, "--tile", "40", "--overlap", "16"], r"tile, overlap: bsstnet tiles on its 1/4-resolution"),
        (["bsstnet", folder, "--tile", "48"], r"overlap: expected less than tile=48, got 64 \(the official test's"),
        (["stdanet", folder, "--device", "cuda"], r"--device: 'cuda' requested, but CUDA is not available"),
    ]


def test_restore_bad_inputs_write_nothing(tmp_path, capsys):
    for argv, match in _bad_restore_cases(tmp_path):
        out = tmp_path / "out"
        code, _, err = _run(capsys, "restore", argv[0], argv[1], out, *argv[2:])
        assert code == 2, (argv, err)
        assert err.count("error:") == 1 and __import__("re").search(match, err), (argv, err)
        assert not out.exists(), argv


def test_resume_needs_a_folder(tmp_path, capsys):
    folder, _ = _frames_folder(tmp_path, length=3)
    code, _, err = _run(capsys, "restore", "dstnet", folder, tmp_path / "o.mp4", "--resume")
    assert code == 2 and "--resume: only for a folder of frames" in err


# -- python -m deblurlayers evaluate -------------------------------------------------------------
def test_evaluate_gopro_layout_prints_the_table_and_writes_the_json(tmp_path, capsys):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    root = make_dataset(tmp_path / "GOPRO_Large", "gopro", lengths=(5, 7))
    code, out, err = _run(capsys, "evaluate", "dstnet", root, "--dataset", "gopro", *DSTNET, "--save",
                          tmp_path / "restored", "--frames-per-clip", 4, "--quiet")
    assert code == 0, err
    assert "protocol 'dstnet'" in out and "seqA" in out and "seqB" in out
    assert "paper (GoPro, Table 1): PSNR 34.16  SSIM 0.9679" in out
    report = json.loads((tmp_path / "restored" / "dstnet_gopro_dstnet.json").read_text())
    assert [s["name"] for s in report["sequences"]] == ["seqA", "seqB"]
    assert report["overall"]["scored_frames"] == 12  # DSTNet scores every frame
    # every per-frame PSNR is scikit-image's on the saved 8-bit frames (DSTNet's protocol: no crop)
    for seq in report["sequences"]:
        saved = list_frames(tmp_path / "restored" / seq["name"])
        sharp = list_frames(root / "test" / seq["name"] / "sharp")
        for i, value in zip(seq["frames"]["index"], seq["frames"]["psnr"]):
            a = np.asarray(read_image(saved[i]).numpy() * 255, dtype=np.float64).round()
            b = np.asarray(read_image(sharp[i]).numpy() * 255, dtype=np.float64).round()
            assert value == pytest.approx(skimage_metrics.peak_signal_noise_ratio(b, a, data_range=255), abs=1e-6)
    frames_psnr = [v for s in report["sequences"] for v in s["frames"]["psnr"]]
    assert report["overall"]["psnr"] == pytest.approx(sum(frames_psnr) / len(frames_psnr), abs=1e-12)


def test_evaluate_with_another_papers_protocol(tmp_path, capsys):
    root = make_dataset(tmp_path, "bsd", lengths=(6, 5))
    code, out, err = _run(capsys, "evaluate", "stdanet", root, "--dataset", "bsd", "--config", "channels=8",
                          "--config", "num_points=2", "--protocol", "erdn", "--report", tmp_path / "r.json", "--quiet")
    assert code == 0, err
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["protocol"]["name"] == "erdn"
    assert [s["scored_frames"] for s in report["sequences"]] == [2, 1]  # the first and last 2 are skipped
    assert "BSD 1ms-8ms" in out


def test_evaluate_bad_inputs(tmp_path, capsys):
    root = make_dataset(tmp_path / "d", "kind_first", lengths=(3, 3), height=16, width=16)
    (tmp_path / "wrong").mkdir()
    cases = [
        (["fstanet", root, "--dataset", "gopro"], r"--protocol: fstanet has no official evaluation code"),
        (["dstnet", tmp_path / "wrong", "--dataset", "gopro"], r"no gopro layout found"),
        (["dstnet", tmp_path / "nowhere", "--dataset", "dvd"], r"dataset root not found"),
    ]
    write_frames(tmp_path / "d" / "test" / "GT" / "seqB", torch.rand(1, 3, 16, 24))  # a sharp frame too wide
    cases.append((["dstnet", root, "--dataset", "gopro"], r"000000.png: frame of size \(16, 24\) in sequence 'seqB'"))
    for argv, match in cases:
        code, _, err = _run(capsys, "evaluate", *argv, "--report", tmp_path / "r.json")
        assert code == 2 and __import__("re").search(match, err), (argv, err)
        assert not (tmp_path / "r.json").exists()


@pytest.mark.slow
def test_torchrun_on_two_processes_equals_one(tmp_path):
    root = make_dataset(tmp_path / "d", "kind_first", names=("a", "b", "c"), lengths=(5, 6, 4), height=24, width=32)
    args = ["-m", "deblurlayers", "evaluate", "dstnet", str(root), "--dataset", "dvd", *DSTNET, "--quiet"]
    # torchrun runs each process on one thread; the single process does too, since the oneDNN
    # convolutions sum in another order on more threads (fp32 results then move by ~1e-6)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}
    one = subprocess.run([sys.executable, *args, "--report", str(tmp_path / "one.json")], capture_output=True,
                         text=True, env=env)
    assert one.returncode == 0, one.stderr
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          *args, "--report", str(tmp_path / "two.json")], capture_output=True, text=True, env=env)
    assert two.returncode == 0, two.stderr
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in ("one", "two"))
    assert b["settings"]["processes"] == 2
    assert a["sequences"] == b["sequences"] and a["overall"] == b["overall"]


def test_progress_without_tqdm_is_a_line_with_rate_and_eta(monkeypatch):
    import io

    from deblurlayers.pipeline import Progress

    monkeypatch.setitem(sys.modules, "tqdm", None)
    stream = io.StringIO()
    bar = Progress(4, "restore dstnet", stream=stream)
    bar.update(2)
    bar.update(2)
    bar.close()
    lines = stream.getvalue().splitlines()
    assert lines[-1].startswith("restore dstnet: 4/4 frames, ") and "frames/s" in lines[-1] and "ETA 0 s" in lines[-1]

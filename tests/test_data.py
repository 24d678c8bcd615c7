"""deblurlayers.data: frame I/O, the datasets' layouts, and the torch datasets."""
import os
import sys

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from deblurlayers.data import (ClipDataset, SequenceDataset, VideoWriter, find_sequences, list_frames, natural_key,
                               read_image, read_video, write_image)
from synthetic import make_dataset, sequence, write_frames

pytest.importorskip("PIL")


def test_natural_sort():
    names = ["f10.png", "f2.png", "F1.png", "f100.png"]
    assert sorted(names, key=natural_key) == ["F1.png", "f2.png", "f10.png", "f100.png"]


def test_list_frames_natural_order_without_hidden_files(tmp_path):
    for name in ["10.png", "9.png", ".x.partial-1.png", "notes.txt"]:
        (tmp_path / name).write_bytes(b"")
    assert [p.name for p in list_frames(tmp_path)] == ["9.png", "10.png"]


def test_png_round_trip_is_exact_on_8_bit_values(tmp_path):
    frame = torch.randint(0, 256, (3, 9, 11)).float() / 255
    write_image(tmp_path / "a.png", frame)
    assert torch.equal(read_image(tmp_path / "a.png"), frame)
    assert os.listdir(tmp_path) == ["a.png"]


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    from PIL import Image

    def fail_half_way(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89PNG truncated")
        raise OSError("disk full")

    monkeypatch.setattr(Image.Image, "save", fail_half_way)
    with pytest.raises(OSError, match="disk full"):
        write_image(tmp_path / "a.png", torch.rand(3, 4, 4))
    assert os.listdir(tmp_path) == []


def test_unreadable_image_names_the_file(tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    with pytest.raises(ValueError, match=r"bad.png: not a readable image"):
        read_image(tmp_path / "bad.png")


def test_missing_pillow_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL.Image", None)
    with pytest.raises(ImportError, match=r"pip install 'deblurlayers\[io\]'"):
        write_image(tmp_path / "a.png", torch.rand(3, 4, 4))


def test_missing_pyav_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"pip install 'deblurlayers\[video\]'"):
        next(read_video(tmp_path / "a.mp4"))


def test_video_round_trip(tmp_path):
    pytest.importorskip("av")
    _, sharp = sequence(5, 32, 48, seed=1)
    with VideoWriter(tmp_path / "v.mp4", fps=10) as writer:
        for frame in sharp:
            writer.write(frame)
    frames = list(read_video(tmp_path / "v.mp4"))
    assert len(frames) == 5
    # H.264 at CRF 0 in 4:4:4; only the RGB <-> YUV conversion rounds
    assert max((a - b).abs().max().item() for a, b in zip(frames, sharp)) < 4 / 255
    assert os.listdir(tmp_path) == ["v.mp4"]


def test_a_failed_video_leaves_nothing(tmp_path):
    pytest.importorskip("av")
    with pytest.raises(RuntimeError, match="stop"):
        with VideoWriter(tmp_path / "v.mp4") as writer:
            writer.write(torch.rand(3, 16, 16))
            raise RuntimeError("stop")
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("layout,dataset", [("gopro", "gopro"), ("kind_first", "gopro"), ("dvd", "dvd"),
                                            ("kind_first", "dvd"), ("bsd", "bsd"), ("kind_first", "bsd")])
def test_every_layout_is_found(tmp_path, layout, dataset):
    names = ("IMG_0003", "IMG_0021") if layout == "dvd" else ("seq10", "seq9")
    make_dataset(tmp_path, layout, names=names, lengths=(3, 4), height=8, width=8)
    found = find_sequences(tmp_path, dataset)
    assert [s.name for s in found] == sorted(names, key=natural_key)
    assert {s.name: len(s) for s in found} == {names[0]: 3, names[1]: 4}
    assert all(len(s.sharp) == len(s.blurry) for s in found)


def test_gopro_prefers_blur_gamma_as_stdan(tmp_path):
    make_dataset(tmp_path, "gopro", names=("a",), lengths=(2,), height=8, width=8)
    write_frames(tmp_path / "test" / "a" / "blur", torch.zeros(2, 3, 8, 8))
    assert find_sequences(tmp_path, "gopro")[0].blurry[0].parent.name == "blur_gamma"


def test_dvd_release_layout_takes_the_official_test_videos(tmp_path):
    make_dataset(tmp_path, "dvd", names=("IMG_0003", "IMG_0099"), lengths=(2, 2), height=8, width=8)
    assert [s.name for s in find_sequences(tmp_path, "dvd")] == ["IMG_0003"]
    assert [s.name for s in find_sequences(tmp_path, "dvd", split="train")] == ["IMG_0099"]


def test_erdn_layout(tmp_path):
    write_frames(tmp_path / "Test" / "blur" / "v", torch.zeros(2, 3, 8, 8))
    write_frames(tmp_path / "Test" / "gt" / "v", torch.zeros(2, 3, 8, 8))
    assert [s.name for s in find_sequences(tmp_path, "dvd")] == ["v"]


def test_wrong_layout_lists_the_expected_ones(tmp_path):
    write_frames(tmp_path / "test" / "frames", torch.zeros(2, 3, 8, 8))
    with pytest.raises(ValueError, match=r"no gopro layout found for split 'test'; expected one of:\n.*blur_gamma"):
        find_sequences(tmp_path, "gopro")


def test_missing_root_and_unknown_dataset(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing: dataset root not found"):
        find_sequences(tmp_path / "missing", "gopro")
    with pytest.raises(ValueError, match=r"dataset: expected one of \('gopro', 'dvd', 'bsd'\), got 'reds'"):
        find_sequences(tmp_path, "reds")


def test_mismatched_frame_counts(tmp_path):
    make_dataset(tmp_path, "kind_first", names=("a",), lengths=(3,), height=8, width=8)
    (tmp_path / "test" / "GT" / "a" / "000002.png").unlink()
    with pytest.raises(ValueError, match=r"sequence 'a': 3 blurry frames in .* but 2 sharp frames"):
        find_sequences(tmp_path, "gopro")


def test_clip_dataset_crops_and_flips_blurry_and_sharp_together(tmp_path):
    make_dataset(tmp_path, "kind_first", names=("a", "b"), lengths=(4, 5), height=16, width=20)
    sequences = find_sequences(tmp_path, "gopro")
    # pair every blurry frame with itself: any crop or flip applied to one side only would show
    same = [type(s)(s.name, s.blurry, s.blurry) for s in sequences]
    data = ClipDataset(same, num_frames=3, crop_size=(8, 12))
    assert len(data) == 2 + 3
    for i in range(len(data)):
        item = data[i]
        assert item["blurry"].shape == (3, 3, 8, 12)
        assert torch.equal(item["blurry"], item["sharp"])


def test_clip_dataset_with_workers_and_distributed_sampler(tmp_path):
    make_dataset(tmp_path, "kind_first", names=("a", "b"), lengths=(4, 5), height=16, width=20)
    data = ClipDataset(find_sequences(tmp_path, "gopro"), num_frames=2, crop_size=8, flip=False)
    seen = []
    for rank in range(2):
        sampler = DistributedSampler(data, num_replicas=2, rank=rank, shuffle=False)
        loader = DataLoader(data, batch_size=2, sampler=sampler, num_workers=2)
        for batch in loader:
            assert batch["blurry"].shape[1:] == (2, 3, 8, 8)
            seen += [(n, int(s)) for n, s in zip(batch["name"], batch["start"])]
    assert sorted(set(seen)) == [("a", 0), ("a", 1), ("a", 2), ("b", 0), ("b", 1), ("b", 2), ("b", 3)]


def test_sequence_dataset(tmp_path):
    make_dataset(tmp_path, "kind_first", names=("a",), lengths=(3,), height=8, width=10)
    item = SequenceDataset(find_sequences(tmp_path, "gopro"))[0]
    assert item["name"] == "a" and item["blurry"].shape == item["sharp"].shape == (3, 3, 8, 10)


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_frames=0), r"num_frames: expected an int >= 1, got 0"),
    (dict(num_frames=9), r"num_frames: every sequence is shorter than 9 frames"),
    (dict(num_frames=2, crop_size=(8,)), r"crop_size: expected an int >= 1, an \(h, w\) pair"),
    (dict(num_frames=2, stride=0), r"stride: expected an int >= 1"),
])
def test_clip_dataset_bad_arguments(tmp_path, kwargs, match):
    make_dataset(tmp_path, "kind_first", names=("a",), lengths=(3,), height=8, width=8)
    with pytest.raises(ValueError, match=match):
        ClipDataset(find_sequences(tmp_path, "gopro"), **kwargs)


def test_crop_larger_than_frames(tmp_path):
    make_dataset(tmp_path, "kind_first", names=("a",), lengths=(3,), height=8, width=8)
    with pytest.raises(ValueError, match=r"crop_size: \(16, 16\) exceeds the frames of sequence 'a' \(8, 8\)"):
        ClipDataset(find_sequences(tmp_path, "gopro"), num_frames=2, crop_size=16)[0]

"""verify_checkpoint (issue 26): a downloaded file checked against the model's key manifest and shapes
before anything is loaded; load_official refuses other shapes before copying anything."""
import pytest
import torch

from deblurlayers.models import RAFT, load_official, verify_checkpoint

from model_cases import manifest, official_state_dict

# registered name (or "raft") -> the official manifest its released checkpoint follows
MANIFESTS = {"stdanet": "STDAN", "stdanet_stack": "STDAN_Stack", "dstnet": "DSTNet", "dstnet_l": "DSTNet_L",
             "erdn": "ERDN", "erdn_single": "ERDN_1", "bsstnet": "BSST", "raft": "RAFT"}


def manifest_state_dict(name, device="meta"):
    """Every key and shape of the official model (no values on the meta device, except DSTNet's
    fixed Haar filters, which its converter checks)."""
    return official_state_dict(manifest(name), device=device)


@pytest.mark.parametrize("name", sorted(MANIFESTS))
def test_every_official_manifest_verifies_as_its_model(name):
    report = verify_checkpoint({"params": manifest_state_dict(MANIFESTS[name])}, name)
    assert report.ok, str(report)
    assert report.tensors == len(manifest(MANIFESTS[name])["entries"])
    assert str(report).startswith(f"{name}: ok: loads strictly")


def test_another_models_checkpoint_is_not_the_expected_one():
    report = verify_checkpoint(manifest_state_dict("STDAN"), "dstnet")
    assert not report.ok and report.missing_keys and report.unexpected_keys
    assert "NOT the expected checkpoint" in str(report)
    # Same keys, other widths: DSTNet-L's checkpoint for DSTNet (where the names coincide).
    report = verify_checkpoint(manifest_state_dict("DSTNet_L"), "dstnet")
    assert not report.ok and report.mismatched_shapes
    key, (got, want) = next(iter(report.mismatched_shapes.items()))
    assert got != want and f"{key}: shape {list(got)} in the checkpoint, {list(want)} expected" in str(report)


def test_a_checkpoint_with_keys_missing_names_them():
    state = manifest_state_dict("RAFT")
    dropped = sorted(state)[:3]
    for key in dropped:
        del state[key]
    report = verify_checkpoint(state, "raft")
    assert not report.ok and report.missing_keys == dropped


def test_a_truncated_download_is_reported_not_raised(tmp_path):
    path = tmp_path / "raft-things.pth"
    torch.save({f"module.{k}": v for k, v in manifest_state_dict("RAFT", device="cpu").items()}, path)
    assert verify_checkpoint(path, "raft").ok  # DataParallel's prefix is stripped, as load_official does
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    report = verify_checkpoint(path, "raft")
    assert not report.ok and report.error.startswith("could not read the checkpoint")
    with pytest.raises(FileNotFoundError):
        verify_checkpoint(tmp_path / "absent.pth", "raft")
    with pytest.raises(ValueError, match=r"name: expected one of .*'raft'"):
        verify_checkpoint(path, "raftx")


def test_a_converter_refusal_is_reported():
    state = manifest_state_dict("DSTNet")
    state["wave.haar_weights"] = torch.ones_like(state["wave.haar_weights"])
    report = verify_checkpoint(state, "dstnet")
    assert not report.ok and "Haar" in report.error and "refused by the converter" in str(report)


def test_load_official_with_other_shapes_changes_nothing():
    torch.manual_seed(0)
    model = RAFT()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    state = {k: torch.randn_like(v) if v.is_floating_point() else v + 1 for k, v in before.items()}
    key = sorted(state)[-1]  # the last one: a partial copy would have changed all the others
    state[key] = torch.zeros(*state[key].shape[:-1], state[key].shape[-1] + 1)
    for strict in (True, False):
        with pytest.raises(RuntimeError, match=f"nothing was loaded:\\n  {key}: "):
            load_official(model, state, strict=strict)
        after = model.state_dict()
        assert all(torch.equal(after[k], before[k]) for k in before)


def test_files_that_are_not_checkpoints_get_clear_errors(tmp_path):
    model = RAFT()
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError, match=r"notes.txt' is not a PyTorch checkpoint"):
        load_official(model, text)
    pickled = tmp_path / "model.pth"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(ValueError, match=r"holds pickled Python objects.*\.state_dict\(\) to load_official"):
        load_official(model, pickled)
    tensor = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor)
    with pytest.raises(ValueError, match=r"holds a Tensor, expected a state dict"):
        load_official(model, tensor)
    with pytest.raises(FileNotFoundError, match=r"nothing is downloaded"):
        load_official(model, tmp_path / "raft-things.pth")
    assert "not a PyTorch checkpoint" in verify_checkpoint(text, "raft").error

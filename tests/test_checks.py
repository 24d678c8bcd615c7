import pytest
import torch

from deblurlayers.utils import check_floating, check_shape


def test_check_shape_returns_named_sizes():
    assert check_shape(torch.zeros(2, 5, 3, 8, 9), "B T C H W", name="x") == dict(B=2, T=5, C=3, H=8, W=9)


def test_check_shape_wrong_rank_names_argument_layout_and_shape():
    with pytest.raises(ValueError, match=r"clip: expected a 5-d tensor of shape \(B, T, C, H, W\), got shape \(2, 3, 8, 8\)"):
        check_shape(torch.zeros(2, 3, 8, 8), "B T C H W", name="clip")


def test_check_shape_fixed_size_and_known_sizes():
    with pytest.raises(ValueError, match=r"flow: expected shape \(B, 2, H, W\) with 2=2, got shape \(1, 3, 4, 4\)"):
        check_shape(torch.zeros(1, 3, 4, 4), "B 2 H W", name="flow")
    with pytest.raises(ValueError, match=r"flow: expected shape \(B=1, 2, H=4, W=5\) with W=5, got shape \(1, 2, 4, 4\)"):
        check_shape(torch.zeros(1, 2, 4, 4), "B 2 H W", name="flow", sizes=dict(B=1, H=4, W=5))


def test_check_shape_repeated_name_must_agree():
    check_shape(torch.zeros(3, 3), "N N", name="m")
    with pytest.raises(ValueError, match="with N=3"):
        check_shape(torch.zeros(3, 4), "N N", name="m")


def test_check_shape_and_floating_type_errors():
    with pytest.raises(TypeError, match="x: expected a torch.Tensor"):
        check_shape([1, 2], "B C", name="x")
    with pytest.raises(TypeError, match="x: expected a floating-point tensor, got dtype torch.int64"):
        check_floating(torch.zeros(2, dtype=torch.long), name="x")

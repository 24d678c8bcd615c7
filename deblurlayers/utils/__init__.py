from .batch import empty_batch
from .frames import check_clip, check_finite, clip_forward, pad_to_multiple
from .layout import cat_channels, in_layout_of, memory_format_of
from .checks import IntPair, autocast_enabled, check_floating, check_input, check_same_device, check_shape, conv_output_size, to_pair

__all__ = ["autocast_enabled", "check_shape", "check_input", "empty_batch", "check_floating", "check_same_device", "to_pair", "conv_output_size",
           "check_clip", "check_finite", "clip_forward", "pad_to_multiple", "IntPair", "in_layout_of", "memory_format_of", "cat_channels"]

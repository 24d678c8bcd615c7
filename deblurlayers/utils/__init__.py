from .checks import check_floating, check_same_device, check_shape, conv_output_size, to_pair

__all__ = ["check_shape", "check_floating", "check_same_device", "to_pair", "conv_output_size"]

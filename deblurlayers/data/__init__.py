"""Video deblurring data: frame I/O (Pillow and PyAV, optional extras), the GoPro/DVD/BSD layouts,
and ``torch.utils.data`` datasets for training clips and test sequences."""
from .datasets import ClipDataset, SequenceDataset
from .io import (IMAGE_SUFFIXES, VIDEO_SUFFIXES, VideoWriter, count_video_frames, is_video, list_frames,
                 natural_key, read_image, read_video, write_image)
from .layouts import DATASETS, DVD_TEST, VideoSequence, find_sequences

__all__ = ["read_image", "write_image", "read_video", "count_video_frames", "VideoWriter", "list_frames",
           "natural_key", "is_video", "IMAGE_SUFFIXES", "VIDEO_SUFFIXES", "find_sequences", "VideoSequence",
           "DATASETS", "DVD_TEST", "ClipDataset", "SequenceDataset"]

"""From footage to the papers' numbers: streaming restoration (:class:`Restorer`) and evaluation
under each paper's protocol (:func:`score_sequence`); the ``restore`` and ``evaluate`` commands of
``python -m deblurlayers`` are built on them."""
from .evaluate import evaluation_report, format_report, score_sequence, write_report
from .plan import Step, clip_plan, window_plan
from .progress import Progress
from .restore import DTYPES, FrameSource, Restorer

__all__ = ["Restorer", "FrameSource", "DTYPES", "Step", "window_plan", "clip_plan", "score_sequence",
           "evaluation_report", "format_report", "write_report", "Progress"]

"""Reference models of the papers, assembled from :mod:`deblurlayers.layers`.

Each file holds one paper's models, their builders (registered by name) and the converter of its
released checkpoints:

- :mod:`.stdanet`: ``STDANet``, ``STDANetStack`` (``"stdanet"``, ``"stdanet_stack"``)
- :mod:`.dstnet`: ``DSTNet`` (``"dstnet"``, ``"dstnet_l"``)
- :mod:`.erdn`: ``ERDN`` (``"erdn"``: two stages, 5 frames; ``"erdn_single"``: one stage, 3 frames)
- :mod:`.fstanet`: ``FSTANet`` (``"fstanet"``, derived: the paper released no code)
- :mod:`.bsstnet`: ``BSSTNet`` (``"bsstnet"``; RAFT-large as its flow estimator)

- :mod:`.flow`: ``RAFT`` (BSSTNet's flow estimator; not a registered model)

``get_model(name, **kwargs)`` builds by name; ``load_official(model, checkpoint)`` loads a released
checkpoint of the official code, and ``verify_checkpoint(path, name)`` checks a downloaded file
first; ``tiled_inference(model, frames)`` runs any of them on overlapping tiles and chunks of frames.
"""
from ._checkpoint import CheckpointReport, OfficialLoadResult, load_official, register_converter, verify_checkpoint
from ._cards import Checkpoint, ModelCard, Reported, TestPipeline
from ._registry import get_model, get_model_card, list_models, register_model
from ._tiling import tiled_inference
from .bsstnet import BSSTNet, bsstnet_loss
from .dstnet import DSTNet, dstnet_loss
from .erdn import ERDN, ERDNOutput, ERDNStage, erdn_loss, erdn_stage_loss
from .flow import RAFT
from .fstanet import FSTANet
from .stdanet import STDANet, STDANetOutput, STDANetStack, stdanet_loss, stdanet_stack_loss, stdanet_warp_loss

__all__ = ["list_models", "get_model", "get_model_card", "ModelCard", "Checkpoint", "Reported", "TestPipeline", "register_model", "load_official", "OfficialLoadResult",
           "verify_checkpoint", "CheckpointReport", "register_converter", "STDANet",
           "STDANetStack", "STDANetOutput", "DSTNet", "FSTANet", "stdanet_loss", "stdanet_stack_loss", "stdanet_warp_loss",
           "dstnet_loss", "ERDN", "ERDNStage", "ERDNOutput", "erdn_loss", "erdn_stage_loss", "RAFT", "tiled_inference",
           "BSSTNet", "bsstnet_loss"]

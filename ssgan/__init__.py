"""ssgan: a fast, faithful SemanticStyleGAN (Shi et al., CVPR 2022) with fused Triton kernels."""
from ssgan.config import PRESETS, SSGConfig, preset
from ssgan.discriminator import Discriminator
from ssgan.generator import Generator, GeneratorOutput
from ssgan.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from ssgan.editing import (
    apply_direction, colorize_seg, fit_direction, interpolate_regions, locality, region_slots, render_components,
    slot_mask, swap_regions,
)  # fmt: skip
from ssgan.encoder import encode, train_encoder
from ssgan.inversion import invert, load_image

__version__ = "0.1.0"
__all__ = [
    "PRESETS", "SSGConfig", "preset", "Discriminator", "Generator", "GeneratorOutput",
    "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint",
    "apply_direction", "colorize_seg", "fit_direction", "interpolate_regions", "locality", "region_slots",
    "render_components", "slot_mask", "swap_regions", "encode", "train_encoder", "invert", "load_image",
]  # fmt: skip

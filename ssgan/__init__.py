"""ssgan: a fast, faithful SemanticStyleGAN (Shi et al., CVPR 2022) with fused Triton kernels."""
from ssgan.config import PRESETS, SSGConfig, preset
from ssgan.discriminator import Discriminator
from ssgan.generator import Generator, GeneratorOutput
from ssgan.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint

__version__ = "0.1.0"
__all__ = [
    "PRESETS", "SSGConfig", "preset", "Discriminator", "Generator", "GeneratorOutput",
    "Checkpoint", "CheckpointError", "load_checkpoint", "save_checkpoint",
]  # fmt: skip

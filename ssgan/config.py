"""Model configuration and presets."""
import dataclasses
import json
import math
from dataclasses import dataclass, field

CELEBAMASK_CLASSES = (
    "background", "face", "eyes", "brows", "mouth", "nose", "ears",
    "hair", "neck", "cloth", "glasses", "hat", "earrings",
)  # fmt: skip
DEMO_CLASSES = ("background", "face", "eyes", "brows", "mouth", "hair", "neck")


def default_class_names(count):
    """Names for `count` classes given only by number: "background" (class 0, which has no depth), then class1, ..."""
    if int(count) != count or count < 1:
        raise ValueError(f"a class count must be a positive integer, got {count!r}")
    return ("background",) + tuple(f"class{k}" for k in range(1, int(count)))


def default_channels(size, channel_multiplier=2, base=512):
    """StyleGAN2's channel table from 4 up to `size`: {4..64: 512, 128: 256*cm/2, ...}."""
    table = {4: 512, 8: 512, 16: 512, 32: 512, 64: 256 * channel_multiplier, 128: 128 * channel_multiplier,
             256: 64 * channel_multiplier, 512: 32 * channel_multiplier, 1024: 16 * channel_multiplier}  # fmt: skip
    scale = base / 512
    return {r: max(1, int(c * scale)) for r, c in table.items() if r <= size}


@dataclass(frozen=True)
class SSGConfig:
    """Every number that fixes a SemanticStyleGAN's shape. Defaults are the original's (CelebAMask-HQ 256)."""

    size: int = 256
    style_dim: int = 512
    n_mlp: int = 8
    lr_mlp: float = 0.01
    class_names: tuple = CELEBAMASK_CLASSES
    transparent: tuple = (10, 12)
    local_layers: int = 10
    depth_layers: int = 6
    base_layers: int = 2
    local_channel: int = 64
    coarse_channel: int = 512
    coarse_size: int = 64
    min_feat_size: int = 16
    residual_refine: bool = True
    detach_texture: bool = False
    channel_multiplier: int = 2
    # Octaves N of the coordinates' sin/cos encoding (frequencies 1, 2, ..., 2^(N-1) over [-1, 1]); the original
    # ties it to the output size, N = log2(size), which None selects.
    pos_frequencies: int | None = None
    # Widths of the render net (output resolution -> channels) and the discriminator (resolution ->
    # channels); derived from channel_multiplier when not given.
    render_channels: dict = field(default=None)
    disc_channels: dict = field(default=None)

    def __post_init__(self):
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "transparent", tuple(int(t) for t in self.transparent))
        if self.pos_frequencies is None:
            object.__setattr__(self, "pos_frequencies", int(math.log2(self.size)))
        for name in ("render_channels", "disc_channels"):
            table = getattr(self, name)
            table = default_channels(self.size, self.channel_multiplier) if table is None else table
            object.__setattr__(self, name, {int(r): int(c) for r, c in table.items()})
        self.validate()
        # Keep only the resolutions the model uses, so equal models have equal configs.
        object.__setattr__(self, "render_channels", {r: self.render_channels[r] for r in self.render_resolutions})
        object.__setattr__(self, "disc_channels", {r: self.disc_channels[r] for r in self.disc_resolutions})

    def validate(self):
        def need(ok, message):
            if not ok:
                raise ValueError(f"invalid SSGConfig: {message}")

        for name in ("size", "coarse_size", "min_feat_size"):
            value = getattr(self, name)
            need(value >= 4 and value & (value - 1) == 0, f"{name}={value} must be a power of two >= 4")
        need(self.min_feat_size < self.coarse_size <= self.size,
             f"need min_feat_size < coarse_size <= size, got {self.min_feat_size}, {self.coarse_size}, {self.size}")
        need(self.pos_frequencies >= 1, f"pos_frequencies={self.pos_frequencies} must be >= 1")
        need(self.num_classes >= 1, "class_names must not be empty")
        need(len(set(self.class_names)) == self.num_classes, f"class names repeat: {self.class_names}")
        need(all(0 < t < self.num_classes for t in self.transparent),
             f"transparent classes {self.transparent} must lie in 1..{self.num_classes - 1}")
        need(0 < self.base_layers < self.depth_layers <= self.local_layers,
             f"need 0 < base_layers < depth_layers <= local_layers, got {self.base_layers}, {self.depth_layers}, {self.local_layers}")
        for res in self.render_resolutions:
            need(res in self.render_channels, f"render_channels has no width for resolution {res}")
        for res in self.disc_resolutions:
            need(res in self.disc_channels, f"disc_channels has no width for resolution {res}")

    @property
    def num_classes(self):
        return len(self.class_names)

    @property
    def n_latent(self):
        """Vectors in W+: the base codes, then a shape and a texture code per class."""
        return self.base_layers + 2 * self.num_classes

    @property
    def n_latent_expand(self):
        """Vectors in the expanded space: one per modulated layer of every local generator."""
        return self.num_classes * self.local_layers

    @property
    def render_resolutions(self):
        """Output resolutions of the render-net blocks (the first RGB/seg output is at 2*min_feat_size)."""
        return _render_resolutions(self.size, self.min_feat_size)

    @property
    def disc_resolutions(self):
        return _disc_resolutions(self.size)

    def class_index(self, name):
        """Index of a class given by name (or already an index)."""
        if isinstance(name, int) and 0 <= name < self.num_classes:
            return name
        if name not in self.class_names:
            raise KeyError(f"unknown class {name!r}; this model's classes are {', '.join(self.class_names)}")
        return self.class_names.index(name)

    def derive(self, *, transparent=None, channel_base=None, **changes):
        """A copy with `changes` (SSGConfig fields) applied and what depends on them kept consistent.

        - New `class_names` carry the transparent classes over by name (those missing from the new list are
          dropped), unless `transparent` is given: class names or indices, () for none.
        - A new `size` or `min_feat_size` keeps the widths of the resolutions the old model had and continues
          each table, halving the width per doubling of resolution (StyleGAN2's table above 32 px) or repeating
          the lowest resolution's width below it.
        - `pos_frequencies` that follows the original's rule (log2(size)) follows a new size; a set value is kept.
        - `channel_multiplier` or `channel_base` (the width of the 4-32 px layers, 512 in the original) rebuild
          both tables from StyleGAN2's (`default_channels`). Tables given in `changes` are taken as they are.
        Raises ValueError for unknown fields or an invalid result (see `validate`), KeyError for unknown class names.
        """
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ValueError(f"unknown SSGConfig fields: {sorted(unknown)}")
        names = tuple(changes.get("class_names", self.class_names))
        if transparent is None:
            transparent = [self.class_names[t] for t in self.transparent if self.class_names[t] in names]
        changes["transparent"] = tuple(_class_position(names, t) for t in transparent)
        size = changes.get("size", self.size)
        if "pos_frequencies" not in changes and self.pos_frequencies == int(math.log2(self.size)):
            changes["pos_frequencies"] = None  # it followed the original's rule, log2(size): it follows the new size
        min_feat_size = changes.get("min_feat_size", self.min_feat_size)
        rebuild = channel_base is not None or "channel_multiplier" in changes
        for name, resolutions in (("render_channels", _render_resolutions(size, min_feat_size)),
                                  ("disc_channels", _disc_resolutions(size))):  # fmt: skip
            if name in changes:
                continue
            if rebuild:
                table = default_channels(size, changes.get("channel_multiplier", self.channel_multiplier),
                                         512 if channel_base is None else channel_base)  # fmt: skip
            else:
                table = dict(getattr(self, name))
                for res in sorted(r for r in resolutions if r > max(table)):
                    table[res] = max(1, table[res // 2] // 2)
                for res in sorted((r for r in resolutions if r < min(table)), reverse=True):
                    table[res] = table[res * 2]
            changes[name] = {r: table[r] for r in resolutions if r in table}
        return dataclasses.replace(self, **changes)

    def to_dict(self):
        return dataclasses.asdict(self)

    def to_json(self):
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_dict(cls, data):
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown SSGConfig fields: {sorted(unknown)}")
        return cls(**data)


def _render_resolutions(size, min_feat_size):
    return [2**i for i in range(int(math.log2(min_feat_size)) + 1, int(math.log2(size)) + 1)]


def _disc_resolutions(size):
    return [2**i for i in range(int(math.log2(size)), 1, -1)]


def _class_position(names, cls):
    """Index of a class given by name or index (an int, or a string of digits) in `names`."""
    if isinstance(cls, str) and cls.isdigit():
        cls = int(cls)
    if isinstance(cls, int):
        if not 0 <= cls < len(names):
            raise KeyError(f"class index {cls} is outside 0..{len(names) - 1} ({', '.join(names)})")
        return cls
    if cls not in names:
        raise KeyError(f"unknown class {cls!r}; the classes are {', '.join(names)}")
    return names.index(cls)


PRESETS = {
    "celebamask-256": SSGConfig(size=256),
    "celebamask-512": SSGConfig(size=512),
    # 64 px on CPUs. The original's rule would give it 6 octaves (up to 32 radians over the 32-cell coarse grid, a
    # period of 3 cells), which draws striped depth maps; 4 octaves (periods down to 12 cells) give smooth shapes.
    # The render net starts from the fused features pooled to 16 x 16 (4-px cells of the image, as the original's
    # 16-px cells of 256): from 8 x 8 its convolutions spread an edit of one region twice as far over the image, and
    # the 6-kimg run learnt the layout more slowly (agreement 0.63 instead of 0.89 after 1 kimg on seed 4).
    "demo": SSGConfig(
        size=64, style_dim=64, n_mlp=4, class_names=DEMO_CLASSES, transparent=(), local_channel=32,
        coarse_channel=64, coarse_size=32, min_feat_size=16, pos_frequencies=4,
        render_channels={32: 64, 64: 32}, disc_channels={4: 64, 8: 64, 16: 64, 32: 64, 64: 32},
    ),
}  # fmt: skip


def preset(name):
    """The config of a named preset: celebamask-256, celebamask-512 or demo."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]

"""The generation/config.json contract: every LaTtE-Flow switch of MODEL.md, with its default.

This module owns parsing, validation and the timestep -> group rule. It must not build tensors.
"""

import json
from dataclasses import asdict, dataclass, field

CTX_KV = ("frozen", "replica")
IMG_POS = ("mrope2d", "rope1d")
TCRA = ("pre_softmax", "post_softmax", "none")


@dataclass
class GenerationConfig:
    # Replica shape (must equal the frozen VLM text model's, so prompt K/V fit the replica's attention).
    num_layers: int
    hidden_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    rms_norm_eps: float
    rope_theta: float
    mrope_section: list
    # Layerwise timestep experts (§3).
    num_groups: int  # K
    group_boundaries: list  # K + 1 floats, from 0.0 to 1.0, increasing
    layers_per_group: int = 0  # M = num_layers / K (written explicitly; 0 when building = derive it)
    # Switches (§2-§6).
    ctx_kv: str = "frozen"
    img_pos: str = "mrope2d"
    tcra: str = "pre_softmax"
    per_group_head: bool = False
    time_shift: float = 1.0
    guidance_scale: float = 4.0
    num_steps: int = 40
    # Latent / autoencoder side.
    latent_channels: int = 32
    latent_size: int = 8  # latent height = width
    patch_size: int = 1
    scaling_factor: float = 1.0
    image_size: int = 256
    time_freq_dim: int = 256  # sinusoidal embedding width (time_freq_dim / 2 frequencies, cos then sin)
    # Prompting: the text fed to the frozen VLM is prompt_template with {prompt} replaced; the
    # unconditional prompt is the same template with an empty string.
    prompt_template: str = "<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"
    format: str = "latte-flow-generation/1"
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.layers_per_group and self.num_groups:
            self.layers_per_group = self.num_layers // self.num_groups

    @property
    def token_dim(self) -> int:
        return self.latent_channels * self.patch_size**2

    @property
    def grid(self) -> int:
        return self.latent_size // self.patch_size

    def validate(self) -> None:
        if self.ctx_kv not in CTX_KV or self.img_pos not in IMG_POS or self.tcra not in TCRA:
            raise ValueError(f"bad switch: {self.ctx_kv} {self.img_pos} {self.tcra}")
        if self.num_layers % self.num_groups or self.layers_per_group * self.num_groups != self.num_layers:
            raise ValueError("num_layers must equal num_groups * layers_per_group")
        b = self.group_boundaries
        if len(b) != self.num_groups + 1 or b[0] != 0.0 or b[-1] != 1.0:
            raise ValueError("group_boundaries must be K+1 floats from 0.0 to 1.0")
        if any(x >= y for x, y in zip(b, b[1:])):
            raise ValueError("group_boundaries must increase")
        if sum(self.mrope_section) * 2 != self.head_dim:
            raise ValueError("mrope_section must sum to head_dim / 2")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("query heads must be a multiple of KV heads")
        if self.latent_size % self.patch_size:
            raise ValueError("latent_size must be a multiple of patch_size")

    def group_of(self, t: float) -> int:
        """Group k owns [b_k, b_{k+1}); t = 1.0 belongs to the last group."""
        for k in range(self.num_groups):
            if t < self.group_boundaries[k + 1]:
                return k
        return self.num_groups - 1

    def layers_of(self, group: int) -> range:
        m = self.layers_per_group
        return range(group * m, (group + 1) * m)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)

    def save(self, path) -> None:
        with open(path, "w") as f:
            f.write(self.to_json() + "\n")

    @classmethod
    def load(cls, path) -> "GenerationConfig":
        with open(path) as f:
            cfg = cls(**json.load(f))
        cfg.validate()
        return cfg


def uniform_boundaries(k: int) -> list:
    return [i / k for i in range(k + 1)]

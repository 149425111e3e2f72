"""Registry of the GAN zoo: one frozen spec per ``--model`` name."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

_REGISTRY: dict[str, "GanSpec"] = {}

LOSSES = ("nonsaturating", "wasserstein")
PENALTIES = (None, "gradient_penalty", "dragan")
SCHEDULES = ("alternating", "simultaneous")


@dataclass(frozen=True)
class GanSpec:
    """Everything that distinguishes one GAN of the zoo; the backbone is shared.

    ``n_critic`` discriminator updates, each on a fresh batch, precede one
    generator update in the alternating schedule. In the simultaneous
    schedule both players' gradients are taken at the same parameters and
    then both applied.
    """

    name: str
    label: str
    loss: str
    optimizer: dict
    g_batchnorm: bool = True
    d_batchnorm: bool = True
    penalty: str | None = None
    penalty_weight: float = 0.0
    n_critic: int = 1
    schedule: str = "alternating"
    weight_clip: float | None = None
    consensus_gamma: float | None = None
    reference: str = ""
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"{self.name}: unknown loss {self.loss!r}; expected one of {LOSSES}")
        if self.penalty not in PENALTIES:
            raise ValueError(f"{self.name}: unknown penalty {self.penalty!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"{self.name}: unknown schedule {self.schedule!r}")
        if self.n_critic < 1:
            raise ValueError(f"{self.name}: n_critic must be at least 1")

    def as_dict(self) -> dict:
        return asdict(self)


def register(spec: GanSpec) -> GanSpec:
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is registered twice")
    _REGISTRY[spec.name] = spec
    return spec


def get_spec(name: str) -> GanSpec:
    """Return the spec registered as ``name``; KeyError lists the valid names."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown model {name!r}; valid models: {', '.join(model_names())}") from None


def model_names() -> list[str]:
    return list(_REGISTRY)

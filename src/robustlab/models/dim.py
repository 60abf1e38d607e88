"""Deep InfoMax's `basic_encoder` (Hjelm et al., ICLR 2019, arXiv 1808.06670), the encoder of Zhu et al.
(ICML 2020, arXiv 2002.11798).

Encoder g: Conv(C→64, 4×4, s2)+BN+ReLU -> Conv(64→128, 4×4, s2)+BN+ReLU -> Conv(128→256, 4×4, s2)+BN+ReLU
(the body, the last spatial map) -> flatten -> FC 1024 + BN + ReLU -> FC 64 = the representation z.
Convs have padding 1 and no bias, so each halves the side (rounding down): 32 px -> 4×4×256 = 4096
features, 28 px -> 3×3×256 = 2304 (as in the code), 8 px digits -> 1×1×256 = 256.

On top, the downstream classifier of the Zhu et al. code (`classifier`):
- `linear`: head = Linear(64, K); `forward_features` is z itself.
- `mlp`: Linear(64, 200) -> Dropout(0.1) -> BN -> ReLU, then head = Linear(200, K); `forward_features`
  is then the 200-unit layer, and z is `model.neck.encoder(...)`.

`frozen_encoder=True` makes a downstream classifier on a fixed representation: the encoder's
parameters (normalisation, body, `neck.encoder`) get `requires_grad=False` and its BatchNorm layers stay
in eval mode whatever `train()` is called with, so training (standard or adversarial) changes only
the classifier. The encoder's weights come from an encoder run through the `init_from` callback.
Layers keep PyTorch's default initialisation, as in the official code.
"""

from __future__ import annotations

from typing import Literal

from torch import nn

from ..errors import RobustlabError
from .base import ImageClassifier
from .registry import MODELS


class RepresentationNeck(nn.Module):
    """`encoder` (flat map -> z) followed by the downstream classifier's hidden part (may be empty)."""

    def __init__(self, encoder: nn.Module, classifier: nn.Module):
        super().__init__()
        self.encoder = encoder
        self.classifier = classifier

    def forward(self, fmap):
        return self.classifier(self.encoder(fmap))


class EncoderClassifier(ImageClassifier):
    """An ImageClassifier whose representation part can be frozen (see the module docstring)."""

    def __init__(self, *args, frozen_encoder: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.frozen_encoder = frozen_encoder
        if frozen_encoder:
            for part in self.encoder_parts():
                part.requires_grad_(False)
            self.train(self.training)

    def encoder_parts(self) -> list[nn.Module]:
        return [self.normalize, self.body, self.neck.get_submodule("encoder")]

    def train(self, mode: bool = True) -> EncoderClassifier:
        super().train(mode)
        if self.frozen_encoder:
            for part in self.encoder_parts():
                part.eval()
        return self


@MODELS.register("basic_encoder")
def basic_encoder(
    num_classes,
    in_channels,
    input_size,
    mean,
    std,
    z_dim: int = 64,
    channels: tuple[int, int, int] = (64, 128, 256),
    fc: int = 1024,
    classifier: Literal["linear", "mlp"] = "linear",
    mlp_hidden: int = 200,
    mlp_dropout: float = 0.1,
    frozen_encoder: bool = False,
) -> ImageClassifier:
    """DIM basic encoder (z of size `z_dim`) + a `linear` or `mlp` classifier; see the module docstring."""
    if any(c < 1 for c in (*channels, fc, z_dim, mlp_hidden)):
        raise RobustlabError(
            f"basic_encoder: channels={channels!r}, fc={fc!r}, z_dim={z_dim!r}, mlp_hidden={mlp_hidden!r} must all "
            "be >= 1."
        )
    if not 0.0 <= mlp_dropout < 1.0:
        raise RobustlabError(f"basic_encoder: mlp_dropout={mlp_dropout!r}; allowed: 0 <= mlp_dropout < 1.")
    layers: list[nn.Module] = []
    cin = in_channels
    for c in channels:
        layers += [nn.Conv2d(cin, c, 4, 2, 1, bias=False), nn.BatchNorm2d(c), nn.ReLU(inplace=True)]
        cin = c
    side = input_size // 2 // 2 // 2
    encoder = nn.Sequential(
        nn.Flatten(), nn.Linear(cin * side * side, fc), nn.BatchNorm1d(fc), nn.ReLU(inplace=True), nn.Linear(fc, z_dim)
    )
    if classifier == "mlp":
        hidden: nn.Module = nn.Sequential(
            nn.Linear(z_dim, mlp_hidden), nn.Dropout(mlp_dropout), nn.BatchNorm1d(mlp_hidden), nn.ReLU(inplace=True)
        )
        width = mlp_hidden
    else:
        hidden, width = nn.Identity(), z_dim
    model = EncoderClassifier(
        nn.Sequential(*layers),
        RepresentationNeck(encoder, hidden),
        nn.Linear(width, num_classes),
        num_classes=num_classes,
        in_channels=in_channels,
        input_size=input_size,
        mean=mean,
        std=std,
        frozen_encoder=frozen_encoder,
    )
    return model

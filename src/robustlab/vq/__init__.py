"""Vector-quantised autoencoders: the discretiser Q of DAT (Mao et al., NeurIPS 2022).

- `VQModel` / `VQArch`: the taming-transformers VQGAN layout (encoder, quant_conv, codebook,
  post_quant_conv, decoder); `VQModel.reconstruct(x)` is Q(x) for images in [0, 1].
- `VectorQuantizer`: nearest-code assignment, straight-through estimator, codebook + commitment loss,
  dead-code restarts.
- `train_vq(train, val, VQTrainConfig(...))`: train one on our data; `evaluate_vq`: PSNR and codebook
  usage (perplexity, dead codes).
- `save_vq` / `load_vq`: safetensors + JSON; `load_taming_vqgan`: the public
  vqgan_openimages_f8_16384 / vqgan_imagenet_f16_16384 .ckpt files from a local path.
"""

from .io import load_taming_vqgan, load_vq, save_vq
from .model import PUBLISHED, VQArch, VQModel
from .quantizer import VectorQuantizer, usage
from .train import VQTrainConfig, evaluate_vq, psnr, train_vq

__all__ = [
    "PUBLISHED",
    "VQArch",
    "VQModel",
    "VQTrainConfig",
    "VectorQuantizer",
    "evaluate_vq",
    "load_taming_vqgan",
    "load_vq",
    "psnr",
    "save_vq",
    "train_vq",
    "usage",
]

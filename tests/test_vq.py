"""The VQ discretiser: nearest-code assignment, straight-through gradients, idempotence of Q on its own
reconstructions, training quality on digits, checkpoints, and the taming-transformers VQGAN loader."""

from __future__ import annotations

import pytest
import torch

from robustlab.errors import RobustlabError
from robustlab.vq import (PUBLISHED, VQArch, VQModel, VQTrainConfig, VectorQuantizer, load_taming_vqgan, load_vq, psnr, save_vq,
                          train_vq, usage)

# A VQ small enough to train in a few seconds on one core (the study's default is larger; see the slow test).
FAST = VQTrainConfig(ch=8, z_channels=8, num_groups=4, codebook_size=64, epochs=10, lr=3e-3)


@pytest.fixture(scope="module")
def fast_vq(digits):
    return train_vq(digits.train, digits.val, FAST, quiet=True)


def test_assignment_is_the_nearest_code():
    torch.manual_seed(0)
    q = VectorQuantizer(37, 5)
    q.embedding.weight.data.normal_()
    z = torch.randn(2, 5, 3, 4)
    out = q(z)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 5)
    brute = torch.cdist(flat, q.embedding.weight).argmin(1)  # an independent distance computation
    assert torch.equal(out.indices.flatten(), brute)
    assert torch.allclose(out.z_q.permute(0, 2, 3, 1).reshape(-1, 5), q.embedding.weight[brute])


def test_quantizer_straight_through_passes_the_gradient_at_the_code():
    torch.manual_seed(1)
    q = VectorQuantizer(16, 3)
    q.embedding.weight.data.normal_()
    z = torch.randn(1, 3, 2, 2, requires_grad=True)
    w = torch.randn(1, 3, 2, 2)
    (q(z).z_q.sin() * w).sum().backward()  # a non-linear loss of the quantised latents
    codes = q.embedding.weight[q(z).indices.flatten()].view(1, 2, 2, 3).permute(0, 3, 1, 2)
    assert torch.allclose(z.grad, codes.cos() * w)  # d/dz = the loss gradient evaluated at the codes


def test_commitment_loss_value():
    q = VectorQuantizer(2, 1, beta=0.25)
    q.embedding.weight.data = torch.tensor([[0.0], [1.0]])
    z = torch.tensor([0.2, 0.9]).view(1, 1, 1, 2)
    # codes 0 and 1; squared errors 0.04 and 0.01 -> mean 0.025, times (1 + beta)
    assert q(z).loss.item() == pytest.approx(0.025 * 1.25)


def test_usage_and_dead_code_restart():
    counts = usage(torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), 6)  # 4 of 6 codes, equally often
    assert counts == {"perplexity": pytest.approx(4.0), "dead_codes": 2, "usage": pytest.approx(4 / 6)}
    assert usage(torch.tensor([5] * 7), 6)["perplexity"] == pytest.approx(1.0)
    torch.manual_seed(0)
    q = VectorQuantizer(6, 2)
    before = q.embedding.weight.detach().clone()
    dead = torch.tensor([False, True, False, False, False, True])
    candidates = torch.tensor([[5.0, 5.0], [-5.0, 5.0], [5.0, -5.0]])
    assert q.restart(dead, candidates, torch.Generator().manual_seed(0)) == 2
    after = q.embedding.weight.detach()
    assert torch.equal(after[~dead], before[~dead])  # live codes stay
    assert all(any(torch.equal(row, c) for c in candidates) for row in after[dead])  # dead ones move onto encoder outputs
    assert set(q.nearest(after[dead]).tolist()) <= set(torch.nonzero(dead).flatten().tolist())  # and now win those points


def test_vq_on_digits_reaches_psnr_with_most_codes_used(fast_vq):
    vq, m = fast_vq
    # a constant mean-digit image scores 11.5 dB; this small VQ reaches about 17 dB with every code in use
    assert m["psnr"] >= 15.0
    assert m["usage"] >= 0.9 and m["perplexity"] >= 0.5 * FAST.codebook_size


@pytest.mark.slow
def test_default_digits_vq_quality(digits):
    vq, m = train_vq(digits.train, digits.val, VQTrainConfig(), quiet=True)
    # measured: 23.2 dB, 6 of 128 codes unused on the validation split, perplexity 88
    assert m["psnr"] >= 22.0
    assert m["usage"] >= 0.9


def test_q_is_idempotent_on_decoded_codebook_images(fast_vq, digits):
    vq, _ = fast_vq
    x = digits.test.x
    with torch.no_grad():
        qx = vq.reconstruct(x)
        qqx = vq.reconstruct(qx)
    first, second = psnr(qx, x).mean(), psnr(qqx, qx).mean()
    assert qx.shape == x.shape and qx.min() >= 0 and qx.max() <= 1
    assert second >= first + 8  # Q moves its own outputs far less than it moves the data (≈ 29 vs 17 dB)


def test_save_load_roundtrip(fast_vq, digits, tmp_path):
    vq, m = fast_vq
    save_vq(tmp_path / "vq", vq, {"metrics": m})
    back, meta = load_vq(tmp_path)
    x = digits.test.x[:20]
    with torch.no_grad():
        assert torch.equal(back.reconstruct(x), vq.reconstruct(x))
    assert meta["metrics"]["psnr"] == pytest.approx(m["psnr"])
    assert not any(p.requires_grad for p in back.parameters()) and not back.training
    with pytest.raises(RobustlabError, match="no VQ checkpoint"):
        load_vq(tmp_path / "missing")


# --- the taming-transformers layout --------------------------------------------------------------

def taming_keys(a: VQArch) -> dict[str, tuple[int, ...]]:
    """Every state-dict key of a taming VQModel with this ddconfig, with its shape, enumerated from the
    published architecture (independently of robustlab.vq.model)."""
    keys: dict[str, tuple[int, ...]] = {}

    def conv(name, cin, cout, k):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (cout, cin, k, k), (cout,)

    def norm(name, c):
        keys[f"{name}.weight"], keys[f"{name}.bias"] = (c,), (c,)

    def resnet(name, cin, cout):
        norm(f"{name}.norm1", cin), conv(f"{name}.conv1", cin, cout, 3), norm(f"{name}.norm2", cout), conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def attn(name, c):
        norm(f"{name}.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{name}.{p}", c, c, 1)

    def middle(prefix, c):
        resnet(f"{prefix}.mid.block_1", c, c), attn(f"{prefix}.mid.attn_1", c), resnet(f"{prefix}.mid.block_2", c, c)

    levels = len(a.ch_mult)
    conv("encoder.conv_in", a.in_channels, a.ch, 3)
    res, cin = a.resolution, a.ch
    for i in range(levels):
        for j in range(a.num_res_blocks):
            resnet(f"encoder.down.{i}.block.{j}", cin, a.ch * a.ch_mult[i])
            cin = a.ch * a.ch_mult[i]
            if res in a.attn_resolutions:
                attn(f"encoder.down.{i}.attn.{j}", cin)
        if i < levels - 1:
            conv(f"encoder.down.{i}.downsample.conv", cin, cin, 3)
            res //= 2
    middle("encoder", cin)
    norm("encoder.norm_out", cin), conv("encoder.conv_out", cin, a.z_channels, 3)
    cin, res = a.ch * a.ch_mult[-1], a.resolution // 2 ** (levels - 1)
    conv("decoder.conv_in", a.z_channels, cin, 3)
    middle("decoder", cin)
    for i in reversed(range(levels)):
        for j in range(a.num_res_blocks + 1):
            resnet(f"decoder.up.{i}.block.{j}", cin, a.ch * a.ch_mult[i])
            cin = a.ch * a.ch_mult[i]
            if res in a.attn_resolutions:
                attn(f"decoder.up.{i}.attn.{j}", cin)
        if i > 0:
            conv(f"decoder.up.{i}.upsample.conv", cin, cin, 3)
            res *= 2
    norm("decoder.norm_out", cin), conv("decoder.conv_out", cin, a.out_ch, 3)
    keys["quantize.embedding.weight"] = (a.n_embed, a.embed_dim)
    conv("quant_conv", a.z_channels, a.embed_dim, 1), conv("post_quant_conv", a.embed_dim, a.z_channels, 1)
    return keys


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_published_architecture_has_every_taming_key_and_shape(name):
    with torch.device("meta"):
        vq = VQModel(PUBLISHED[name])
    ours = {k: tuple(v.shape) for k, v in vq.state_dict().items()}
    assert ours == taming_keys(PUBLISHED[name])


SMALL = VQArch(ch=8, ch_mult=(1, 2, 2), num_res_blocks=1, attn_resolutions=(8,), z_channels=4, resolution=16, n_embed=12,
               embed_dim=3, num_groups=4)


def _lightning_checkpoint(path, arch, drop=(), reshape=()):
    torch.manual_seed(0)
    state = {k: torch.randn(shape) for k, shape in taming_keys(arch).items() if k not in drop}
    for k in reshape:
        state[k] = torch.randn(2, 2)
    state["loss.discriminator.main.0.weight"] = torch.randn(4, 3, 4, 4)  # training-loss weights the loader drops
    torch.save({"state_dict": state, "epoch": 3, "global_step": 1000, "pytorch-lightning_version": "1.0.8"}, path)
    return state


def test_loader_maps_every_key_of_a_taming_state_dict(tmp_path):
    path = tmp_path / "vqgan.ckpt"
    state = _lightning_checkpoint(path, SMALL)
    vq = load_taming_vqgan(path, SMALL)
    loaded = vq.state_dict()
    assert set(loaded) == {k for k in state if not k.startswith("loss.")}
    for k, v in loaded.items():
        assert torch.equal(v, state[k]), k
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        out = vq.reconstruct(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1
    assert load_vq(path, SMALL)[1]["format"] == "taming"


def test_loader_rejects_mismatched_files_listing_the_keys(tmp_path):
    path = tmp_path / "bad.ckpt"
    _lightning_checkpoint(path, SMALL, drop=("decoder.conv_out.bias",), reshape=("quant_conv.weight",))
    with pytest.raises(RobustlabError) as err:
        load_taming_vqgan(path, SMALL)
    assert "decoder.conv_out.bias" in str(err.value) and "quant_conv.weight" in str(err.value)
    with pytest.raises(RobustlabError, match="no published VQGAN matches"):
        load_taming_vqgan(path, "auto")  # 12×3 codebook: neither public model


class _Payload:
    def __reduce__(self):
        return (print, ("this must never run",))


def test_loader_never_unpickles_arbitrary_objects(tmp_path, capsys):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "callback": _Payload()}, path)
    with pytest.raises(RobustlabError, match="weights_only"):
        load_taming_vqgan(path, SMALL)
    assert "must never run" not in capsys.readouterr().out

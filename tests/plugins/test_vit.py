"""The ViT plugin's model: shapes on every image size it must take, patch size choice and checks, attention maps."""

from __future__ import annotations

import pytest
import torch
from dlbench_plugins.vit.model import VisionTransformer, default_patch_size

TINY = {"dim": 16, "depth": 2, "heads": 2}


@pytest.mark.parametrize(("in_channels", "image_size", "num_classes", "grid"),
                         [(1, 8, 10, 4), (1, 28, 10, 7), (3, 32, 7, 8)])
def test_logits_and_token_shapes(in_channels, image_size, num_classes, grid):
    model = VisionTransformer(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **TINY).eval()
    x = torch.randn(3, in_channels, image_size, image_size)
    with torch.no_grad():
        assert model.embed(x).shape == (3, 1 + grid * grid, 16)  # class token + one token per patch
        assert model(x).shape == (3, num_classes)


@pytest.mark.parametrize(("image_size", "patch"), [(8, 2), (28, 4), (32, 4), (64, 8), (16, 2), (7, 7), (1, 1)])
def test_default_patch_size_divides_the_image_into_at_most_an_8x8_grid(image_size, patch):
    assert default_patch_size(image_size) == patch
    assert image_size % patch == 0 and image_size // patch <= 8


def test_explicit_patch_size_sets_the_grid():
    model = VisionTransformer(image_size=28, patch_size=7, **TINY)
    assert model.patch_embed.kernel_size == model.patch_embed.stride == (7, 7)
    assert model.pos_embed.shape == (1, 1 + 16, 16)


@pytest.mark.parametrize("patch_size", [3, 5, 0, -2, 9])
def test_patch_size_must_divide_the_image(patch_size):
    with pytest.raises(ValueError, match=r"^patch_size must be a positive divisor of image_size 8.*\[1, 2, 4, 8\]"):
        VisionTransformer(image_size=8, patch_size=patch_size)


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"dim": 30, "heads": 4}, "heads"),
    ({"dim": 0}, "dim"),
    ({"depth": 0}, "depth"),
    ({"heads": 0}, "heads"),
    ({"num_classes": 1}, "num_classes"),
    ({"in_channels": 0}, "in_channels"),
    ({"image_size": 0}, "image_size"),
    ({"mlp_ratio": 0.0}, "mlp_ratio"),
    ({"dropout": 1.0}, "dropout"),
    ({"lr": -1e-3}, "lr"),
    ({"weight_decay": -0.1}, "weight_decay"),
    ({"warmup_fraction": 1.0}, "warmup_fraction"),
    ({"label_smoothing": -0.1}, "label_smoothing"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument} "):
        VisionTransformer(**kwargs)


def test_layers_are_pre_norm():
    model = VisionTransformer(**TINY)
    assert len(model.encoder.layers) == 2
    assert all(layer.norm_first for layer in model.encoder.layers)


def test_patches_see_their_position():
    # Learned position embeddings: the same patch content at two places gives two different tokens.
    model = VisionTransformer(image_size=8, patch_size=4, dropout=0.0, **TINY).eval()
    x = torch.zeros(1, 1, 8, 8)
    x[..., :4, :4] = 1.0
    swapped = x.flip(-1)
    with torch.no_grad():
        tokens, tokens_swapped = model.embed(x), model.embed(swapped)
    torch.testing.assert_close(tokens[0, 1] - model.pos_embed[0, 1], tokens_swapped[0, 2] - model.pos_embed[0, 2])
    assert not torch.allclose(tokens[0, 1], tokens_swapped[0, 2])


def test_class_attention_is_a_distribution_over_the_patch_grid():
    model = VisionTransformer(in_channels=3, image_size=32, **TINY).eval()
    with torch.no_grad():
        attention = model.class_attention(torch.randn(2, 3, 32, 32))
        picture = model._attention_picture(torch.randn(1, 3, 32, 32))
    assert attention.shape == (2, 8, 8)
    assert (attention >= 0).all() and (attention.sum(dim=(1, 2)) <= 1 + 1e-5).all()  # the rest goes to the class token
    assert picture.shape[0] == 3 and picture.min() >= 0 and picture.max() <= 1


def test_no_weight_decay_on_embeddings_biases_and_norms():
    model = VisionTransformer(**TINY)
    groups = model.parameter_groups()
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert id(model.patch_embed.weight) in decayed and id(model.head.weight) in decayed
    assert not {id(model.cls_token), id(model.pos_embed), id(model.head.bias), id(model.norm.weight)} & decayed
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))

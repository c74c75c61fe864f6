"""The ResNet plugin's model: shapes on every image size it must take, the residual path, argument checks."""

from __future__ import annotations

import pytest
import torch
from dlbench_plugins.resnet.model import BasicBlock, ResNet, stage_strides

TINY = {"widths": (4, 8, 8, 16), "blocks": (1, 1, 1, 1)}


@pytest.mark.parametrize(("in_channels", "image_size", "num_classes"), [(1, 8, 10), (1, 28, 10), (3, 32, 7)])
def test_logits_shape(in_channels, image_size, num_classes):
    model = ResNet(num_classes=num_classes, in_channels=in_channels, image_size=image_size, **TINY).eval()
    with torch.no_grad():
        out = model(torch.randn(3, in_channels, image_size, image_size))
    assert out.shape == (3, num_classes)


@pytest.mark.parametrize(("image_size", "final"), [(8, 2), (28, 4), (32, 4), (64, 8), (4, 2), (3, 2), (1, 1)])
def test_stages_downsample_while_the_map_stays_at_least_two_pixels(image_size, final):
    model = ResNet(image_size=image_size, **TINY).eval()
    with torch.no_grad():
        features = model.stages(model.stem(torch.randn(2, 1, image_size, image_size)))
    assert features.shape == (2, 16, final, final)


def test_stage_strides_follow_the_resnet18_plan():
    # Four stages, the first at full resolution, each later one halving: 32 -> 32, 16, 8, 4.
    assert stage_strides(32, 4) == [1, 2, 2, 2]
    assert stage_strides(8, 4) == [1, 2, 2, 1]


def test_default_is_the_resnet18_shape():
    model = ResNet()
    assert [len(stage) for stage in model.stages] == [2, 2, 2, 2]
    assert all(isinstance(block, BasicBlock) for stage in model.stages for block in stage)
    full = ResNet(widths=(64, 128, 256, 512), num_classes=1000, in_channels=3, image_size=32)
    # ResNet-18's 11.7M parameters less the 7x7 stem (9,408 weights) plus a 3x3 one (1,728 weights).
    assert sum(p.numel() for p in full.parameters()) == 11_689_512 - 9_408 + 1_728


def _zero_residual_branch(block: BasicBlock) -> None:
    with torch.no_grad():
        block.conv2[0].weight.zero_()


def test_block_with_zeroed_branch_is_the_identity():
    block = BasicBlock(6, 6).eval()
    _zero_residual_branch(block)
    x = torch.randn(2, 6, 5, 5).relu()  # a block's input is the previous block's ReLU output
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)


def test_block_that_changes_shape_uses_a_projection_shortcut():
    block = BasicBlock(4, 8, stride=2).eval()
    assert isinstance(block.shortcut[0], torch.nn.Conv2d) and block.shortcut[0].stride == (2, 2)
    _zero_residual_branch(block)
    x = torch.randn(2, 4, 8, 8)
    with torch.no_grad():
        out = block(x)
        torch.testing.assert_close(out, block.shortcut(x).relu())
    assert out.shape == (2, 8, 4, 4)


def test_residual_branch_adds_to_the_shortcut():
    block = BasicBlock(3, 3).eval()
    x = torch.randn(1, 3, 6, 6).relu()
    with torch.no_grad():
        residual = block.conv2(block.conv1(x).relu())
        torch.testing.assert_close(block(x), (residual + x).relu())


def test_zero_init_residual_makes_every_block_start_as_the_identity():
    model = ResNet(widths=(4, 8), blocks=(2, 2), zero_init_residual=True).eval()
    block = model.stages[1][1]  # a stage's second block keeps width and resolution: an identity shortcut
    x = torch.randn(2, 8, 4, 4).relu()
    with torch.no_grad():
        torch.testing.assert_close(block(x), x)
    plain = ResNet(widths=(4, 8), blocks=(2, 2), zero_init_residual=False)
    assert plain.stages[1][1].conv2[1].weight.abs().sum() > 0


@pytest.mark.parametrize(("kwargs", "argument"), [
    ({"widths": ()}, "widths"),
    ({"widths": (8, 0)}, "widths"),
    ({"widths": (8, 16), "blocks": (2, 2, 2)}, "blocks"),
    ({"blocks": (2, 0, 2, 2)}, "blocks"),
    ({"num_classes": 1}, "num_classes"),
    ({"in_channels": 0}, "in_channels"),
    ({"image_size": 0}, "image_size"),
    ({"lr": 0.0}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"weight_decay": -1.0}, "weight_decay"),
    ({"label_smoothing": 1.0}, "label_smoothing"),
    ({"optimizer": "adam"}, "optimizer"),
    ({"schedule": "step"}, "schedule"),
])
def test_bad_arguments_name_the_argument(kwargs, argument):
    with pytest.raises(ValueError, match=f"^{argument} "):
        ResNet(**kwargs)


@pytest.mark.filterwarnings("ignore:.*self.trainer. reference is not registered")
def test_label_smoothing_applies_to_training_loss_only():
    model = ResNet(label_smoothing=0.2, **TINY).eval()
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    with torch.no_grad():
        plain = torch.nn.functional.cross_entropy(model(x), y)
        torch.testing.assert_close(model._step((x, y), "val"), plain)
        assert not torch.allclose(model._step((x, y), "train"), plain)


def test_channels_last_layout_gives_the_same_logits():
    fast = ResNet(channels_last=True, **TINY).eval()
    plain = ResNet(channels_last=False, **TINY).eval()
    plain.load_state_dict(fast.state_dict())
    x = torch.randn(2, 1, 8, 8)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), rtol=1e-4, atol=1e-5)

"""dlbench's own metrics: the majority-class baseline and LossMean, the epoch mean of a loss."""

from __future__ import annotations

import math

import pytest
import torch
from torchmetrics import MeanMetric

from dlbench.train.metrics import LossMean, MajorityAccuracy


def test_loss_mean_weights_batches_by_size_as_meanmetric_does():
    batches = [(torch.tensor(1.0), 64), (torch.tensor(2.0), 64), (torch.tensor(4.0), 8)]  # a short last batch
    ours, reference = LossMean(), MeanMetric()
    for value, size in batches:
        ours.update(value, weight=size)
        reference.update(value, weight=size)
    assert float(ours.compute()) == pytest.approx(float(reference.compute()))
    assert float(ours.compute()) == pytest.approx((64 * 1 + 64 * 2 + 8 * 4) / 136)
    # torchmetrics' own way to skip the NaN check drops the weights: the plain mean of the three batch means.
    disabled = MeanMetric(nan_strategy="disable")
    for value, size in batches:
        disabled.update(value, weight=size)
    assert float(disabled.compute()) == pytest.approx(7 / 3)


def test_loss_mean_takes_tensor_weights_numbers_and_low_precision_values():
    mean = LossMean()
    mean.update(torch.tensor([1.0, 3.0]), weight=torch.tensor([1.0, 3.0]))
    mean.update(torch.tensor(2.0, dtype=torch.bfloat16), weight=4)
    mean.update(0.5)
    assert float(mean.compute()) == pytest.approx((1 + 9 + 8 + 0.5) / (4 + 4 + 1))
    assert mean.mean_value.dtype == torch.float32


def test_a_nan_loss_makes_the_mean_nan_rather_than_vanishing():
    mean, reference = LossMean(), MeanMetric(nan_strategy="ignore")
    for metric in (mean, reference):
        metric.update(torch.tensor(1.0), weight=2)
        metric.update(torch.tensor(float("nan")), weight=2)
    assert math.isnan(float(mean.compute()))
    assert float(reference.compute()) == 1.0  # what "warn"/"ignore" would show: a broken run looking fine


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_loss_mean_updates_without_a_host_synchronisation_on_cuda():
    value = torch.tensor(1.5, device="cuda")
    ours, reference = LossMean().cuda(), MeanMetric().cuda()
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        ours.update(value, weight=128)
        with pytest.raises(RuntimeError, match="synchroniz"):
            reference.update(value, weight=128)  # its `if nans.any()` waits for the device
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert float(ours.compute()) == pytest.approx(1.5)


def test_majority_accuracy_is_the_share_of_the_most_frequent_class():
    metric = MajorityAccuracy(num_classes=3)
    metric.update(torch.tensor([0, 1, 1, 2]))
    metric.update(torch.tensor([1, 1]))
    assert float(metric.compute()) == pytest.approx(4 / 6)

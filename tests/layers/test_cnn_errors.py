"""Errors at the boundary of the CNN layers: they name the layer, what it expected and what it got."""

from __future__ import annotations

import numpy as np
import pytest

import nnx

from helpers import host, rand


def test_conv2d_wrong_rank(backend):
    conv = nnx.Conv2d(4, 6, 3)
    # (C, H, W) and (C, L) are PyTorch's unbatched inputs (tests/layers/test_catalogue_unbatched.py)
    with pytest.raises(ValueError, match=r"Conv2d\(4, 6, kernel_size=\(3, 3\).*\): expected 3-D \(unbatched\) or "
                                         r"4-D \(batched\) input of shape \(C, H, W\) or \(N, C, H, W\), got shape "
                                         r"\(7, 7\)"):
        conv(rand(7, 7, dtype="float32"))
    with pytest.raises(ValueError, match=r"Conv1d\(.*expected 2-D \(unbatched\) or 3-D \(batched\) input of shape "
                                         r"\(C, L\) or \(N, C, L\), got shape \(4,\)"):
        nnx.Conv1d(4, 6, 3)(rand(4, dtype="float32"))


def test_conv_channel_mismatch(backend):
    with pytest.raises(ValueError, match=r"Conv2d\(4, 6, .*expected input with 4 channels \(dimension 1\), "
                                         r"got shape \(2, 3, 7, 7\)"):
        nnx.Conv2d(4, 6, 3)(rand(2, 3, 7, 7, dtype="float32"))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(4, 2, .*expected input with 4 channels"):
        nnx.ConvTranspose2d(4, 2, 3)(rand(1, 2, 3, 3, dtype="float32"))
    with pytest.raises(ValueError, match=r"BatchNorm2d\(3, .*expected input with 3 channels \(dimension 1\), "
                                         r"got shape \(2, 4, 2, 2\)"):
        nnx.BatchNorm2d(3)(rand(2, 4, 2, 2, dtype="float32"))
    with pytest.raises(ValueError, match=r"GroupNorm\(2, 4, .*expected input with 4 channels"):
        nnx.GroupNorm(2, 4)(rand(2, 6, 2, dtype="float32"))


def test_kernel_larger_than_padded_input(backend):
    with pytest.raises(ValueError, match=r"Conv2d\(2, 3, kernel_size=\(5, 5\).*kernel size \(5, 5\) \(dilated extent "
                                         r"\(5, 5\)\) is larger than the padded input: spatial size \(3, 4\) with "
                                         r"total padding \(0, 0\); got input shape \(1, 2, 3, 4\)"):
        nnx.Conv2d(2, 3, 5)(rand(1, 2, 3, 4, dtype="float32"))
    with pytest.raises(ValueError, match=r"Conv2d\(.*dilated extent \(5, 5\)"):
        nnx.Conv2d(2, 3, 3, dilation=2)(rand(1, 2, 4, 4, dtype="float32"))
    with pytest.raises(ValueError, match=r"MaxPool2d\(kernel_size=\(4, 4\).*larger than the padded input"):
        nnx.MaxPool2d(4)(rand(1, 2, 3, 3, dtype="float32"))
    with pytest.raises(ValueError, match=r"ConvTranspose2d\(2, 2, .*padding \(4, 4\) leaves no output for input "
                                         r"shape \(1, 2, 2, 2\) \(computed output size \(-4, -4\)\)"):
        nnx.ConvTranspose2d(2, 2, 3, padding=4)(rand(1, 2, 2, 2, dtype="float32"))
    with pytest.raises(ValueError, match=r"conv2d: kernel size \(5, 5\).*larger than the padded input"):
        nnx.functional.conv2d(rand(1, 2, 3, 3), rand(3, 2, 5, 5))


@pytest.mark.parametrize("make,message", [
    (lambda: nnx.Conv2d(4, 6, 2.5), r"Conv2d: kernel_size must be a positive integer or a tuple of 2 positive "
                                    r"integers, got 2.5"),
    (lambda: nnx.Conv2d(4.0, 6, 3), r"Conv2d: in_channels must be a positive integer, got 4.0"),
    (lambda: nnx.Conv2d(4, 6, (3, 3, 3)), r"Conv2d: kernel_size must be .* tuple of 2 .* got \(3, 3, 3\)"),
    (lambda: nnx.Conv2d(4, 6, 3, stride=0), r"Conv2d: stride must be a positive integer .* got 0"),
    (lambda: nnx.Conv2d(4, 6, 3, padding=-1), r"Conv2d: padding must be a non-negative integer .* got -1"),
    (lambda: nnx.Conv2d(4, 6, 3, padding="full"), r"Conv2d: padding must be an int, a tuple of ints, 'same' or "
                                                  r"'valid', got 'full'"),
    (lambda: nnx.Conv2d(4, 6, 3, stride=2, padding="same"), r"Conv2d: padding='same' is not supported for strided"),
    (lambda: nnx.Conv1d(4, 6, 3, dilation=1.5), r"Conv1d: dilation must be a positive integer or a tuple of 1"),
    (lambda: nnx.Conv2d(5, 6, 3, groups=2), r"Conv2d: in_channels must be divisible by groups, got in_channels=5, "
                                            r"groups=2"),
    (lambda: nnx.Conv2d(4, 6, 3, groups=4), r"Conv2d: out_channels must be divisible by groups, got out_channels=6"),
    (lambda: nnx.ConvTranspose2d(4, 6, 3, stride=2, output_padding=2),
     r"ConvTranspose2d: output_padding must be smaller than either stride or dilation"),
    (lambda: nnx.MaxPool2d(2.0), r"MaxPool2d: kernel_size must be a positive integer"),
    (lambda: nnx.MaxPool2d(2, padding=2), r"MaxPool2d: padding should be at most half of the kernel size"),
    (lambda: nnx.AvgPool2d(3, stride=(1, 0)), r"AvgPool2d: stride must be a positive integer"),
    (lambda: nnx.AdaptiveAvgPool2d(0), r"AdaptiveAvgPool2d: output_size must be a positive integer"),
    (lambda: nnx.BatchNorm2d(3, momentum=1.5), r"BatchNorm2d: momentum must be a number in \[0, 1\] or None"),
    (lambda: nnx.BatchNorm1d(0), r"BatchNorm1d: num_features must be a positive integer, got 0"),
    (lambda: nnx.GroupNorm(3, 4), r"GroupNorm: num_channels must be divisible by num_groups, got num_channels=4, "
                                  r"num_groups=3"),
    (lambda: nnx.LayerNorm((4, 0)), r"LayerNorm: normalized_shape must be a positive integer"),
    (lambda: nnx.Dropout2d(1.5), r"Dropout2d: p must be in \[0, 1\]"),
])
def test_bad_hyperparameters(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_unsupported_options_say_so():
    with pytest.raises(ValueError, match=r"ConvTranspose2d: only padding_mode='zeros' is supported.*'reflect'"):
        nnx.ConvTranspose2d(2, 2, 3, padding_mode="reflect")
    # MaxPool2d(return_indices=True) is supported now: tests/layers/test_catalogue_pool_indices.py


def test_dtype_and_backend_mismatch(backend):
    conv = nnx.Conv2d(2, 3, 3)
    with pytest.raises(TypeError, match=r"Conv2d\(2, 3, .*input has dtype float64 but the parameters are float32"):
        conv(rand(1, 2, 4, 4, dtype="float64"))
    with pytest.raises(TypeError, match=r"Conv2d\(2, 3, .*expected a floating-point input, got dtype int64"):
        conv(nnx.asarray(np.ones((1, 2, 4, 4), dtype=np.int64)))
    with pytest.raises(TypeError, match=r"MaxPool2d\(.*expected a floating-point input"):
        nnx.MaxPool2d(2)(nnx.asarray(np.ones((1, 2, 4, 4), dtype=np.int64)))
    if backend.name != "numpy":
        with pytest.raises(nnx.BackendMismatchError, match=r"Conv2d\(2, 3, .*nnx.asarray"):
            conv(np.ones((1, 2, 4, 4), dtype=np.float32))
        with pytest.raises(nnx.BackendMismatchError, match=r"BatchNorm2d\(2, .*nnx.asarray"):
            nnx.BatchNorm2d(2)(np.ones((1, 2, 4, 4), dtype=np.float32))


def test_batchnorm_single_value_per_channel_leaves_state_unchanged(backend):
    bn = nnx.BatchNorm1d(3)
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3, .*expected more than 1 value per channel when training, "
                                         r"got input shape \(1, 3\)"):
        bn(rand(1, 3, dtype="float32"))
    assert int(host(bn.num_batches_tracked)) == 0
    assert bn._tape == []
    with pytest.raises(ValueError, match=r"BatchNorm1d\(3, .*expected 2-D or 3-D input of shape \(N, C\) or "
                                         r"\(N, C, L\), got shape \(2, 3, 2, 2\)"):
        bn(rand(2, 3, 2, 2, dtype="float32"))
    assert int(host(bn.num_batches_tracked)) == 0
    bn.eval()
    assert tuple(bn(rand(1, 3, dtype="float32")).shape) == (1, 3)  # eval: running stats, fine


def test_layernorm_shape_mismatch(backend):
    with pytest.raises(ValueError, match=r"LayerNorm\(\(4,\), .*expected input of shape \(\*, 4\), got shape \(2, 5\)"):
        nnx.LayerNorm(4)(rand(2, 5, dtype="float32"))

"""Tests for the I3D network, its checkpoint loading and the device helper."""
import hashlib
import logging
import math

import pytest
import torch
import torch.nn.functional as F

from wtal.device import resolve_device
from wtal.extract.i3d import (
    InceptionI3d,
    WeightsError,
    bf16_is_fast,
    conv3d_same,
    load_i3d,
    max_pool3d_same,
    tf_same_pad,
    weights_fingerprint,
)

from data_paths import SHARED

KEYS_TSV = SHARED / "reference" / "i3d_inception_keys.tsv"


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The host is shared: run the forwards single-threaded, then restore the setting."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def rgb_model():
    torch.manual_seed(0)
    return InceptionI3d(3).eval()


def small_clip(channels=3, batch=1, frames=8, size=32, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, channels, frames, size, size, generator=g) * 2 - 1


# --- TF "SAME" padding -------------------------------------------------------------------

@pytest.mark.parametrize("size,kernel,stride,expected", [
    (224, 7, 2, (2, 3)),   # 224 % 2 == 0: total 7 - 2 = 5
    (16, 7, 2, (2, 3)),
    (112, 3, 2, (0, 1)),   # total 3 - 2 = 1, the odd pad goes after
    (7, 3, 2, (1, 1)),     # 7 % 2 == 1: total 3 - 1 = 2
    (3, 7, 2, (3, 3)),     # total 7 - 1 = 6
    (7, 2, 2, (0, 1)),     # total 2 - 1 = 1
    (14, 2, 2, (0, 0)),
    (28, 3, 1, (1, 1)),
    (5, 1, 1, (0, 0)),
    (1, 3, 2, (1, 1)),
])
def test_tf_same_pad_hand_values(size, kernel, stride, expected):
    assert tf_same_pad(size, kernel, stride) == expected


def test_tf_same_pad_gives_ceil_output_length():
    for size in range(1, 30):
        for kernel in range(1, 8):
            for stride in range(1, 4):
                before, after = tf_same_pad(size, kernel, stride)
                assert 0 <= after - before <= 1
                out = (size + before + after - kernel) // stride + 1
                assert out == math.ceil(size / stride), (size, kernel, stride)


def test_max_pool_same_hand_example():
    # W = 4, kernel 3, stride 2: pads (0, 1) -> windows [0:3] and [2:4] + pad.
    x = torch.tensor([-1.0, -5.0, -2.0, -4.0]).view(1, 1, 1, 1, 4)
    out = max_pool3d_same(x, (1, 1, 3), (1, 1, 2))
    assert out.flatten().tolist() == [-1.0, -2.0]  # the pad never wins (zero padding would)
    out_cl = max_pool3d_same(x.contiguous(memory_format=torch.channels_last_3d), (1, 1, 3), (1, 1, 2))
    assert out_cl.flatten().tolist() == [-1.0, -2.0]


@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pool_same_matches_explicit_padding(channels_last):
    g = torch.Generator().manual_seed(0)
    for t in (1, 2, 3, 4, 7, 8):
        for h in (1, 2, 5, 7, 14):
            for kernel, stride in (((1, 3, 3), (1, 2, 2)), ((3, 3, 3), (2, 2, 2)),
                                   ((2, 2, 2), (2, 2, 2)), ((3, 3, 3), (1, 1, 1)),
                                   ((2, 3, 4), (1, 2, 3))):
                x = torch.randn(2, 3, t, h, h + 1, generator=g)
                pads = [tf_same_pad(n, k, s) for n, k, s in zip(x.shape[2:], kernel, stride)]
                spec = [p for pair in reversed(pads) for p in pair]
                expected = F.max_pool3d(F.pad(x, spec, value=float("-inf")), kernel, stride)
                if channels_last:
                    x = x.contiguous(memory_format=torch.channels_last_3d)
                assert torch.equal(max_pool3d_same(x, kernel, stride), expected), (t, h, kernel)


def test_conv_same_hand_example_and_uneven_pad():
    # 1-D sum kernel of 3, stride 2 on [1, 2, 3, 4]: pads (0, 1) -> [1+2+3, 3+4+0].
    x = torch.tensor([1.0, 2.0, 3.0, 4.0]).view(1, 1, 1, 1, 4)
    w = torch.ones(1, 1, 1, 1, 3)
    assert conv3d_same(x, w, None, (1, 1, 2)).flatten().tolist() == [6.0, 7.0]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, 2, 6, 9, 8, generator=g)
    w = torch.randn(4, 2, 7, 7, 7, generator=g)
    expected = F.conv3d(F.pad(x, (2, 3, 3, 3, 2, 3)), w, None, 2)  # W 8, H 9, T 6 by hand
    assert torch.allclose(conv3d_same(x, w, None, (2, 2, 2)), expected, atol=1e-5)


# --- layout --------------------------------------------------------------------------------

def reference_layout(stream):
    rows = []
    for line in KEYS_TSV.read_text().splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        kind, key, shape = line.split("\t")
        if kind == stream:
            rows.append((key, [int(v) for v in shape.strip("[] ").split(",") if v.strip()]))
    return rows


@pytest.mark.parametrize("stream,channels", [("rgb", 3), ("flow", 2)])
def test_state_dict_matches_public_checkpoint_layout(stream, channels):
    expected = reference_layout(stream)
    assert len(expected) == 344
    model = InceptionI3d(channels)
    got = [(k, list(v.shape)) for k, v in model.state_dict().items()]
    assert got == expected
    for module in model.modules():
        if isinstance(module, torch.nn.BatchNorm3d):
            assert module.eps == 1e-3
        if isinstance(module, torch.nn.Conv3d):
            assert (module.bias is not None) == (module is model.logits.conv3d)


# --- forward -------------------------------------------------------------------------------

def capture_shapes(model, names):
    shapes, outputs, handles = {}, {}, []
    for name in names:
        def hook(_module, _inputs, output, name=name):
            shapes[name] = tuple(output.shape)
            outputs[name] = output
        handles.append(getattr(model, name).register_forward_hook(hook))
    return shapes, outputs, handles


def test_forward_224_shapes_and_reference_pool(rgb_model):
    names = ["Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2c_3x3", "MaxPool3d_3a_3x3",
             "Mixed_3c", "MaxPool3d_4a_3x3", "Mixed_4f", "MaxPool3d_5a_2x2", "Mixed_5c"]
    shapes, outputs, handles = capture_shapes(rgb_model, names)
    try:
        with torch.no_grad():
            features = rgb_model(small_clip(frames=16, size=224))
    finally:
        for handle in handles:
            handle.remove()
    assert shapes == {
        "Conv3d_1a_7x7": (1, 64, 8, 112, 112), "MaxPool3d_2a_3x3": (1, 64, 8, 56, 56),
        "Conv3d_2c_3x3": (1, 192, 8, 56, 56), "MaxPool3d_3a_3x3": (1, 192, 8, 28, 28),
        "Mixed_3c": (1, 480, 8, 28, 28), "MaxPool3d_4a_3x3": (1, 480, 4, 14, 14),
        "Mixed_4f": (1, 832, 4, 14, 14), "MaxPool3d_5a_2x2": (1, 832, 2, 7, 7),
        "Mixed_5c": (1, 1024, 2, 7, 7)}
    assert features.shape == (1, 1024) and features.dtype == torch.float32
    reference = F.avg_pool3d(outputs["Mixed_5c"], kernel_size=(2, 7, 7), stride=(1, 1, 1))
    assert reference.shape == (1, 1024, 1, 1, 1)
    assert torch.equal(features, reference.flatten(1))
    assert features.abs().sum() > 0


def test_forward_112_gives_one_vector_per_clip(rgb_model):
    shapes, outputs, handles = capture_shapes(rgb_model, ["Mixed_5c"])
    try:
        with torch.no_grad():
            features = rgb_model(small_clip(batch=2, frames=16, size=112))
    finally:
        for handle in handles:
            handle.remove()
    assert shapes["Mixed_5c"] == (2, 1024, 2, 4, 4)  # 112 -> 56 -> 28 -> 14 -> 7 -> 4
    assert features.shape == (2, 1024)
    assert torch.allclose(features, outputs["Mixed_5c"].mean(dim=(2, 3, 4)), atol=1e-5)


def test_small_input_batch_independence_classify_and_validation(rgb_model):
    clip = small_clip(batch=2)
    with torch.no_grad():
        both = rgb_model(clip)
        first = rgb_model(clip[:1])
        logits = rgb_model.classify(clip)
    assert torch.allclose(both[:1], first, atol=1e-5)
    weight = rgb_model.logits.conv3d.weight.view(400, 1024)
    expected = both @ weight.T + rgb_model.logits.conv3d.bias
    assert logits.shape == (2, 400)
    assert torch.allclose(logits, expected, atol=1e-4)
    with pytest.raises(ValueError, match=r"\(B, 3, T, H, W\)"):
        rgb_model(small_clip(channels=2))


def test_bf16_autocast_and_channels_last(rgb_model):
    clip = small_clip()
    with torch.no_grad():
        reference = rgb_model(clip)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = rgb_model(clip)
        model_cl = InceptionI3d(3).eval()
        model_cl.load_state_dict(rgb_model.state_dict())
        model_cl = model_cl.to(memory_format=torch.channels_last_3d)
        cl = model_cl(clip.contiguous(memory_format=torch.channels_last_3d))
    assert low.dtype == torch.float32 and low.shape == (1, 1024)
    assert ((low - reference).norm() / reference.norm()).item() < 5e-2
    seen = {}

    def record(name):
        def hook(module, inputs, output):
            seen[name] = output.dtype
        return hook

    hooks = [getattr(rgb_model, name).register_forward_hook(record(name))
             for name in ("Conv3d_1a_7x7", "Conv3d_2b_1x1", "Mixed_5c")]
    with torch.no_grad():
        mixed = rgb_model.forward_bf16(clip)
    for hook in hooks:
        hook.remove()
    assert seen == {"Conv3d_1a_7x7": torch.float32, "Conv3d_2b_1x1": torch.bfloat16, "Mixed_5c": torch.bfloat16}
    assert mixed.dtype == torch.float32 and mixed.shape == (1, 1024)
    assert ((mixed - reference).norm() / reference.norm()).item() < 5e-2
    assert torch.allclose(cl, reference, rtol=1e-4, atol=1e-4)


# --- loading -------------------------------------------------------------------------------

def test_load_checkpoint_round_trip(tmp_path, rgb_model):
    plain = tmp_path / "rgb.pt"
    torch.save(rgb_model.state_dict(), plain)
    wrapped = tmp_path / "wrapped.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in rgb_model.state_dict().items()},
                "epoch": 3}, wrapped)
    clip = small_clip()
    with torch.no_grad():
        expected = rgb_model(clip)
        for path in (plain, wrapped):
            loaded = load_i3d(path, modality="rgb", device="cpu")
            assert not loaded.training
            assert torch.equal(loaded(clip), expected)


def test_load_infers_num_classes_and_tolerates_missing_counters(tmp_path):
    state = InceptionI3d(2, num_classes=157).state_dict()
    state = {"model": {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}}
    path = tmp_path / "flow_charades.pt"
    torch.save(state, path)
    model = load_i3d(str(path), modality="flow")
    assert model.num_classes == 157 and model.in_channels == 2
    assert torch.equal(model.Mixed_5c.b0.conv3d.weight, state["model"]["Mixed_5c.b0.conv3d.weight"])


def test_load_rejects_wrong_checkpoints(tmp_path):
    state = InceptionI3d(3).state_dict()
    missing = dict(state)
    del missing["Mixed_4c.b1b.conv3d.weight"]
    path = tmp_path / "missing.pt"
    torch.save(missing, path)
    with pytest.raises(ValueError) as err:
        load_i3d(path)
    assert str(path) in str(err.value) and "Mixed_4c.b1b.conv3d.weight" in str(err.value)
    assert "missing keys 1 [" in str(err.value)

    extra = dict(state, **{"head.weight": torch.zeros(3)})
    path = tmp_path / "extra.pt"
    torch.save(extra, path)
    with pytest.raises(ValueError, match=r"unexpected keys 1 \[head\.weight\]"):
        load_i3d(path)

    flow = tmp_path / "flow.pt"
    torch.save(InceptionI3d(2).state_dict(), flow)
    with pytest.raises(ValueError) as err:
        load_i3d(flow, modality="rgb")
    message = str(err.value)
    assert str(flow) in message
    assert "Conv3d_1a_7x7.conv3d.weight: file [64, 2, 7, 7, 7] vs model [64, 3, 7, 7, 7]" in message


def test_load_rejects_non_checkpoint_files(tmp_path):
    text = tmp_path / "notes.pt"
    text.write_text("not a checkpoint\n")
    with pytest.raises(WeightsError, match="notes.pt: I3D checkpoint: not a readable torch file"):
        load_i3d(text)
    pickled = tmp_path / "module.pt"
    torch.save(torch.nn.Linear(2, 2), pickled)
    with pytest.raises(WeightsError, match=r"module.pt: I3D checkpoint: .*save model.state_dict\(\) instead"):
        load_i3d(pickled)
    listing = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(WeightsError, match="list.pt: I3D checkpoint: expected a dict, got list"):
        load_i3d(listing)
    untyped = tmp_path / "untyped.pt"
    torch.save({"state_dict": {"conv.weight": [1.0, 2.0]}}, untyped)
    with pytest.raises(WeightsError, match="untyped.pt: expected a state_dict of tensors"):
        load_i3d(untyped)
    with pytest.raises(FileNotFoundError, match="absent.pt"):
        load_i3d(tmp_path / "absent.pt")
    with pytest.raises(ValueError, match="modality"):
        load_i3d(None, modality="depth")


def test_random_weights_warn_and_follow_torch_seed(caplog):
    with caplog.at_level(logging.WARNING, logger="wtal.extract.i3d"):
        torch.manual_seed(5)
        first = load_i3d(None, modality="flow", device="auto")
    assert any("untrained" in r.getMessage() for r in caplog.records)
    torch.manual_seed(5)
    second = load_i3d(None, modality="flow")
    assert first.in_channels == 2 and not first.training
    a, b = first.state_dict(), second.state_dict()
    assert all(torch.equal(a[k].cpu(), b[k]) for k in a)


def test_weights_fingerprint(tmp_path):
    assert weights_fingerprint(None, "rgb") == "random-rgb"
    assert weights_fingerprint(None, "flow") == "random-flow"
    path = tmp_path / "w.pt"
    path.write_bytes(b"abc" * 1000)
    assert weights_fingerprint(path, "rgb") == hashlib.sha256(b"abc" * 1000).hexdigest()[:16]
    other = tmp_path / "v.pt"
    other.write_bytes(b"abd" * 1000)
    assert weights_fingerprint(other, "rgb") != weights_fingerprint(path, "rgb")
    with pytest.raises(ValueError):
        weights_fingerprint(None, "RGB ")


# --- device --------------------------------------------------------------------------------

def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="tpu"):
        resolve_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda:0")
    else:
        assert resolve_device("cuda").type == "cuda"


def test_bf16_is_fast_follows_native_support():
    assert bf16_is_fast(torch.device("cpu")) is bool(
        torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert bf16_is_fast(torch.device("cuda")) is (
        torch.cuda.is_available() and torch.cuda.is_bf16_supported())

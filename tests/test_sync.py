"""IFQALoss in a training loop: no host synchronisation between its checked calls, one graph.

A GPU is not needed to show where a step would wait for one: every operation that reads a value
back to the host (``.item()``, ``bool(t)``, ``.tolist()``, data-dependent shapes) or makes a
tensor from host data (``torch.tensor(values, device=...)``: a copy from pageable memory that
waits for the device) is visible to a dispatch mode on the CPU; a fake CUDA device shows CPU
tensors mixed into device work; ``torch.compile(..., fullgraph=True)`` refuses any graph break.
"""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
from test_loss import BAD_INPUTS
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from ifqa_loss import FPR_WEIGHTS, IFQALoss, preprocess
from ifqa_loss.masks import face_region_masks, template_landmarks
from ifqa_loss.models import IFQACNN

# Operations after which the host holds a value computed on the device (or a shape that depends
# on one), and the one that turns host data into a tensor.
HOST_READS = {
    "aten._local_scalar_dense",  # .item(), bool(t), float(t), int(t)
    "aten.equal",
    "aten.is_nonzero",
    "aten.nonzero",
    "aten.masked_select",
    "aten.unique",
    "aten._unique2",
    "aten.unique_consecutive",
    "aten.lift_fresh",  # torch.tensor(data) / as_tensor / new_tensor
}


class HostReads(TorchDispatchMode):
    """Records the operations of :data:`HOST_READS` (and ``tolist``/``numpy``) run inside it."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in HOST_READS or str(func).startswith("aten.repeat_interleave.self_Tensor"):
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.fixture
def host_reads(monkeypatch):
    """A :class:`HostReads` that also records ``Tensor.tolist``/``numpy`` (not dispatched)."""
    spy = HostReads()
    for method in ("tolist", "numpy"):
        original = getattr(torch.Tensor, method)

        def recording(self, *a, _original=original, _name=method, **k):
            spy.seen.append(f"Tensor.{_name}")
            return _original(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, method, recording)
    return spy


def _net() -> IFQACNN:
    torch.manual_seed(0)
    return IFQACNN(width=0.125, native_size=64)


# (name, IFQALoss keyword arguments, forward keyword arguments built from the images)
CASES = [
    ("default", {}, lambda x: {}),
    ("template regions", {"region_weights": FPR_WEIGHTS}, lambda x: {}),
    (
        "5 landmarks",
        {"region_weights": FPR_WEIGHTS},
        lambda x: {"landmarks": template_landmarks(x.shape[-2:], x.shape[0])},
    ),
    (
        "68 landmarks",
        {"region_weights": {"eyes": 2.0}},
        lambda x: {"landmarks": torch.rand(x.shape[0], 68, 2) * 60 + 10},
    ),
    (
        "masks",
        {"region_weights": {"eyes": 2.0, "mouth": 3.0}},
        lambda x: {"masks": face_region_masks(None, x.shape[-2:], ("eyes", "mouth"))},
    ),
    ("features + target", {"form": "features"}, lambda x: {"target": x.detach().flip(-1)}),
    ("map + target", {"form": "map"}, lambda x: {"target": x.detach().flip(-1)}),
]
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize("name,options,extra", CASES, ids=IDS)
def test_unchecked_calls_read_nothing_back_from_the_device(host_reads, name, options, extra):
    crit = IFQALoss(model=_net(), check_every=3, **options)
    x = torch.rand(2, 3, 80, 80, requires_grad=True)
    kw = extra(x)
    with host_reads:
        crit(x, **kw).backward()  # call 1: the values are checked
    assert host_reads.seen, "the spy must see the checked call's reads"
    for _ in range(2):  # calls 2 and 3: not checked
        host_reads.seen.clear()
        with host_reads:
            loss = crit(x, **kw)
            loss.backward()
        assert host_reads.seen == [], f"{name}: forward + backward read back {host_reads.seen}"
    assert torch.isfinite(loss)


@pytest.mark.filterwarnings("ignore:Accessing the data pointer")
@pytest.mark.parametrize("name,options,extra", CASES[:4], ids=IDS[:4])
def test_no_host_tensor_enters_device_work(name, options, extra):
    """On a fake CUDA device (no GPU needed), no operation of a step takes a CPU tensor.

    A CPU tensor in device work is a host-to-device copy of data in pageable memory, which
    waits for the device. Forward only: backward needs a real CUDA context.
    """
    from torch._subclasses.fake_tensor import FakeTensorMode

    class CpuInputs(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[str] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            for t in tree_leaves((args, kwargs)):
                # 0-dim CPU tensors are Python numbers wrapped by the dispatcher: kernel scalars
                if isinstance(t, torch.Tensor) and t.device.type == "cpu" and t.dim() > 0:
                    self.seen.append(str(func))
            return func(*args, **(kwargs or {}))

    with FakeTensorMode(allow_non_fake_inputs=True):
        try:
            with torch.device("cuda"):
                net = _net()
                x = torch.rand(2, 3, 80, 80, requires_grad=True)
        except (RuntimeError, AssertionError) as e:  # pragma: no cover - torch-version specific
            pytest.skip(f"fake CUDA tensors unavailable here: {e}")
        crit = IFQALoss(model=net, check_inputs=False, **options)
        kw = {k: v.to("cuda") for k, v in extra(x).items()}
        crit(x, **kw)  # warm-up: kernels derived once per weight, constants copied once
        spy = CpuInputs()
        with spy:
            loss = crit(x, **kw)
    assert loss.device.type == "cuda"
    assert spy.seen == [], f"{name}: CPU tensors in device work: {spy.seen}"


def test_values_are_checked_on_the_first_and_every_nth_call(tiny_cnn, monkeypatch):
    checked = []
    real = preprocess._check_values
    monkeypatch.setattr(
        preprocess, "_check_values", lambda x, *a: checked.append(x.shape[0]) or real(x, *a)
    )
    x = torch.rand(1, 3, 32, 32)
    crit = IFQALoss(model=tiny_cnn, check_every=3)
    for call in range(1, 8):
        crit(x)
        assert len(checked) == 1 + (call - 1) // 3  # calls 1, 4 and 7
    checked.clear()
    for _ in range(3):
        IFQALoss(model=tiny_cnn, check_every=1)(x)  # a fresh loss checks its first call
    every = IFQALoss(model=tiny_cnn, check_every=1)
    for _ in range(3):
        every(x)
    assert len(checked) == 6
    checked.clear()
    off = IFQALoss(model=tiny_cnn, check_inputs=False)
    for _ in range(3):
        off(x)
    assert checked == []
    # the default schedule: first call, then every CHECK_EVERY-th
    assert IFQALoss(model=tiny_cnn).check_every == 100


def test_scheduled_check_refuses_bad_values_and_recounts(tiny_cnn):
    crit = IFQALoss(model=tiny_cnn, check_every=3)
    good = torch.rand(1, 3, 32, 32)
    nan = torch.full((1, 3, 32, 32), float("nan"))
    crit(good)  # call 1, checked
    assert torch.isnan(crit(nan))  # call 2, not checked: the NaN shows in the loss
    crit(good)  # call 3
    with pytest.raises(ValueError, match="NaN or Inf"):
        crit(nan)  # call 4: checked
    with pytest.warns(UserWarning, match="outside the declared input_range"):
        crit(good * 255)  # the refused call did not count: this one is checked too (and,
        # the convention settled by call 1, far-out values are warned about, not refused)
    crit(good)
    assert torch.isfinite(crit(good * 255))


VALUE_ERRORS = ("NaN", "Inf", "0-255", "[-1,1] as [0,1]")
SHAPE_ERRORS = [b for b in BAD_INPUTS if b[0] not in VALUE_ERRORS]


@pytest.mark.parametrize("what,x,err,msg", SHAPE_ERRORS, ids=[b[0] for b in SHAPE_ERRORS])
def test_shape_and_dtype_errors_fire_at_every_call(tiny_cnn, what, x, err, msg):
    """Type, rank, channel and size errors read metadata only: unchecked calls raise them too."""
    crit = IFQALoss(model=tiny_cnn, check_every=1000)
    crit(torch.rand(1, 3, 32, 32))  # the checked first call
    with pytest.raises(err, match=msg):
        crit(x)


def test_nan_landmarks_refused_on_checked_calls(tiny_cnn):
    crit = IFQALoss(model=tiny_cnn, region_weights={"eyes": 2.0}, check_every=2)
    x = torch.rand(1, 3, 64, 64)
    bad = torch.full((1, 5, 2), float("nan"))
    with pytest.raises(ValueError, match="landmarks contain NaN"):
        crit(x, landmarks=bad)
    with pytest.raises(ValueError, match=r"\(B, 5, 2\) or \(B, 68, 2\)"):
        crit(x, landmarks=torch.rand(1, 5, 3))  # shape: refused at every call
    crit(x, landmarks=template_landmarks(64))  # checked call 1 passes
    assert torch.isnan(crit(x, landmarks=bad))  # call 2: not checked


def test_bad_schedule_and_compile_arguments(tiny_cnn):
    for every in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="check_every must be an int >= 1"):
            IFQALoss(model=tiny_cnn, check_every=every)
    with pytest.raises(TypeError, match="compile must be a bool"):
        IFQALoss(model=tiny_cnn, compile=3)


# --- compile: one graph, forward and backward, same numbers as eager


def _assert_grad_close(g: torch.Tensor, ref: torch.Tensor) -> None:
    """Input gradients within 1e-4 of the largest one: compiled, the norm + activation runs
    the plain formula instead of the eager path's output-saving backward (float rounding)."""
    assert (g - ref).abs().max() <= 1e-4 * ref.abs().max()


def _eager_and_grad(crit, x, kw):
    x = x.detach().requires_grad_(True)
    loss = crit(x, **kw)
    (g,) = torch.autograd.grad(loss, x)
    return loss.detach(), g


@pytest.mark.parametrize(
    "name,options,extra", [CASES[0], CASES[2], CASES[5]], ids=[IDS[0], IDS[2], IDS[5]]
)
@pytest.mark.slow
def test_whole_loss_compiles_to_one_graph(name, options, extra):
    """``torch.compile(criterion, fullgraph=True)``: no graph break (dynamo, eager backend)."""
    torch._dynamo.reset()
    crit = IFQALoss(model=_net(), **options)
    x = torch.rand(2, 3, 80, 80)
    kw = extra(x)
    ref, gref = _eager_and_grad(crit, x, kw)
    compiled = torch.compile(crit, fullgraph=True, backend="eager")
    out, g = _eager_and_grad(compiled, x, kw)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    _assert_grad_close(g, gref)


@pytest.mark.slow
def test_default_loss_forward_and_backward_trace_as_one_graph():
    """AOTAutograd traces forward and backward of the default loss in one piece (the graphs
    that inductor and CUDA-graph capture take); same numbers as eager to 1e-6 (loss in [0, 1])
    and 1e-4 of the largest input gradient."""
    torch._dynamo.reset()
    crit = IFQALoss(model=_net())
    x = torch.rand(2, 3, 80, 80)
    ref, gref = _eager_and_grad(crit, x, {})
    counts = torch._dynamo.utils.counters
    counts.clear()
    compiled = torch.compile(crit, fullgraph=True, backend="aot_eager")
    out, g = _eager_and_grad(compiled, x, {})
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    _assert_grad_close(g, gref)
    assert counts["stats"]["unique_graphs"] == 1
    assert not counts["graph_break"]


@pytest.mark.slow
def test_compile_switch_keeps_the_checks(tiny_cnn, monkeypatch):
    """``IFQALoss(compile=...)`` compiles what follows the checks; the checks keep running."""
    torch._dynamo.reset()
    opts = {"backend": "eager", "fullgraph": True}
    crit = IFQALoss(model=tiny_cnn, compile=opts, check_every=2, region_weights={"eyes": 2.0})
    eager = IFQALoss(model=tiny_cnn, region_weights={"eyes": 2.0})
    with pytest.raises(ValueError, match="far outside"):
        crit(torch.rand(1, 3, 64, 64) * 255)  # first call: checked, before compiling
    x = torch.rand(2, 3, 64, 64)
    checked = []
    real = preprocess._check_values
    monkeypatch.setattr(preprocess, "_check_values", lambda v, *a: checked.append(1) or real(v, *a))
    for _ in range(4):
        out, g = _eager_and_grad(crit, x, {})
    assert len(checked) == 2  # calls 1 and 3
    ref, gref = _eager_and_grad(eager, x, {})
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)
    _assert_grad_close(g, gref)
    # copies drop the compiled function and build their own
    twin = copy.deepcopy(crit)
    assert "_compiled_core" not in twin.__dict__
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(twin(x), out, rtol=0, atol=1e-6)

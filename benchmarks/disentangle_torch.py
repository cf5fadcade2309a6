"""The PyTorch peers of ``benchmarks.disentangle_train`` (no JAX import: the
one-process-per-core workers of ``benchmarks.common.ProcessPool`` import this module).

The work of one network-step (Vafidis et al. 2025, Fig. 1, D = 2): a batch of ``B = 16``
trials (latent ``U[-1/2, 1/2]^2``, ``STIM = 20`` noisy samples with sigma 0.2, a fixation
step before and a decision step after: ``T = 22`` steps, fixation input 1 except at the
decision step), through the network's frozen random encoder ``2 -> 100 -> 100 -> 40``
(ReLU, ReLU, linear), the ReLU RNN ``41 -> 64`` (alpha = 1, ``h_0 = 0``), the readout
``64 -> 24``; sigmoid + BCE against 0.5 before the decision step and the 24 task labels
``1[x_2 > tan(phi_i) x_1]`` at it, mean over (T, B, 24); one Adam (lr 1e-3) update.

`BatchedRNNs` trains ``M`` such networks at once, as a skilled PyTorch user would:
stacked parameters ``[M, in, out]`` and ``torch.bmm``/``torch.baddbmm``, the input drive
of all 22 steps as one product, only ``h W_rec`` in the Python time loop, the readout of
all steps as one product, ``binary_cross_entropy_with_logits`` (sigmoid + BCE in one op),
the loss the sum over networks of each one's mean BCE (so each network's gradient is
the one it would get alone), one ``torch.optim.Adam`` over the stacks (Adam is
elementwise: one Adam over stacks equals M separate Adams). Constants are made once:
the encoding of the blank (zero) stimulus of the fixation and decision steps, the
fixation channel, the 0.5 targets. The first encoder layer (2 inputs) is written as two
broadcast multiply-adds, as gbi_jax does (a matmul with a 2-long contraction runs far
below matmul speed). `AuthorsRNN` is one network in the authors' style (``nn.Linear``
layers, ``nn.BCELoss`` on sigmoid outputs), kept as a reference row.

FLOP count of one network-step (`network_step_flops`; matmul FLOPs, 2 per multiply-add)
------------------------------------------------------------------------------------
* encoder, forward only (frozen): 320 samples (B x STIM) x 2 x (2*100 + 100*100 +
  100*40) = 9,088,000 (of which the 2 -> 100 layer, 128,000, is elementwise);
* RNN input drive ``[352, 41] @ [41, 64]`` (T*B = 352 rows): forward 1,847,296 +
  weight gradient 1,847,296 (the inputs are data: no input gradient) = 3,694,592;
* recurrence ``h_{t-1} @ W_rec`` ``[16, 64] @ [64, 64]`` for the 21 steps t = 1..21
  (``h_0 = 0``): forward, weight gradient and state gradient 3 x 21 x 131,072 =
  8,257,536;
* readout ``[352, 64] @ [64, 24]``: forward, weight gradient, input gradient 3 x
  1,081,344 = 3,244,032;
* labels ``[16, 2] @ [2, 24]``: 1,536.

Total **24,285,696 matmul FLOPs per network-step** (`FLOPS_PER_NETWORK_STEP`). Not
counted: biases, ReLUs and masks, the BCE, the data's random numbers, Adam (about 10k
parameters' elementwise update). ``torch.utils.flop_counter`` on one step of
`BatchedRNNs` counts the same minus the elementwise first encoder layer
(`torch_counted_flops`).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from benchmarks.common import split_range

B, T, STIM, D = 16, 22, 20, 2     # batch, steps (fixation + 20 samples + decision), latent
F_ENC, H, N = 40, 64, 24          # encoder output, hidden units, tasks (outputs)
F_IN = F_ENC + 1                  # RNN input: fixation channel + encoder features
ENC = (D, 100, 100, F_ENC)        # encoder widths
SIGMA, LR = 0.2, 1e-3


def line_tans(num_tasks: int = N) -> list[float]:
    """``tan(phi_i)``, ``phi_i = (i + 1/2) pi / N``: task ``i`` labels ``1[x_2 > tan x_1]``
    (``gbi_jax.tasks.line_angles``)."""
    return [math.tan((i + 0.5) * math.pi / num_tasks) for i in range(num_tasks)]


def network_step_flops() -> dict[str, int]:
    """Matmul FLOPs of one network-step by part (see the module docstring) and ``total``."""
    rows = T * B
    enc = STIM * B * 2 * sum(a * b for a, b in zip(ENC[:-1], ENC[1:]))
    parts = {
        "encoder forward (frozen; first layer elementwise)": enc,
        "RNN input drive: forward + weight gradient": 2 * (2 * rows * F_IN * H),
        "recurrence (21 steps): forward + weight + state gradients": 3 * (T - 1) * 2 * B * H * H,
        "readout: forward + weight + input gradients": 3 * 2 * rows * H * N,
        "labels": 2 * B * D * N,
    }
    parts["total"] = sum(parts.values())
    return parts


FLOPS_PER_NETWORK_STEP = network_step_flops()["total"]          # 24,285,696
FIRST_ENCODER_LAYER_FLOPS = STIM * B * 2 * ENC[0] * ENC[1]      # 128,000, elementwise


def jax_program_flops_explained() -> dict[str, int]:
    """How the matmul FLOPs of the gbi_jax program's jaxpr (``common.matmul_flops``) differ
    from `FLOPS_PER_NETWORK_STEP` per network-step, term by term (``total``: the jaxpr's
    count these terms predict)."""
    rows = T * B
    terms = {
        "first encoder layer elementwise in gbi_jax too": -FIRST_ENCODER_LAYER_FLOPS,
        "blank stimulus re-encoded every step (layers 2-3, 1 sample)":
            2 * sum(a * b for a, b in zip(ENC[1:-1], ENC[2:])),
        "h_0 @ W_rec of step 0 (h_0 = 0) in forward, weight and state gradients":
            3 * 2 * B * H * H,
        "input gradient of the RNN drive (in the hand-written backward's jaxpr; unused)":
            2 * rows * H * F_IN,
        "latent sampling z @ chol^T ([16, 2] @ [2, 2])": 2 * B * D * D,
    }
    terms["total"] = FLOPS_PER_NETWORK_STEP + sum(terms.values())
    return terms


# --------------------------------------------------------------------------
# M networks at once (stacked weights).
# --------------------------------------------------------------------------
def _uniform(g, shape, fan_in: int):
    import torch

    bound = 1.0 / math.sqrt(fan_in)
    return (torch.rand(shape, generator=g) * 2 - 1) * bound


class BatchedRNNs:
    """``members`` networks trained together; :meth:`step` is one training step of all.

    Parameters (``nn.Linear``'s init per network, U(+-1/sqrt(fan_in))): ``w_in [M, 41,
    64]``, ``b [M, 1, 64]`` (input and recurrent bias in one), ``w_rec [M, 64, 64]``,
    ``w_out [M, 64, 24]``, ``b_out [M, 1, 24]``; the frozen encoder's ``enc_w{i}``,
    ``enc_b{i}`` likewise stacked. Every tensor is time-major inside (``[M, T, B, .]``)
    so each step's slice of the drive is one block.
    """

    def __init__(self, members: int, seed: int = 0, fused_adam: bool = True,
                 compile: bool = False):
        import torch

        self.m = members
        self._loss = torch.compile(self.loss) if compile else self.loss
        g = torch.Generator().manual_seed(seed)
        self.enc = []
        for fi, fo in zip(ENC[:-1], ENC[1:]):
            self.enc.append((_uniform(g, (members, fi, fo), fi),
                             _uniform(g, (members, 1, fo), fi)))
        self.w_in = _uniform(g, (members, F_IN, H), F_IN).requires_grad_()
        self.b = _uniform(g, (members, 1, H), F_IN).requires_grad_()
        self.w_rec = _uniform(g, (members, H, H), H).requires_grad_()
        self.w_out = _uniform(g, (members, H, N), H).requires_grad_()
        self.b_out = _uniform(g, (members, 1, N), H).requires_grad_()
        self.params = [self.w_in, self.b, self.w_rec, self.w_out, self.b_out]
        try:  # one fused kernel per update where this PyTorch has it on CPU
            self.opt = torch.optim.Adam(self.params, lr=LR, fused=fused_adam or None)
        except (RuntimeError, TypeError):
            self.opt = torch.optim.Adam(self.params, lr=LR, foreach=True)
        self.normals = torch.tensor([[-t for t in line_tans()], [1.0] * N])   # [2, N]
        with torch.no_grad():
            self.blank = self.encode(torch.zeros(members, 1, D))                 # [M, 1, 40]
        self.blank_steps = self.blank[:, None].expand(members, 1, B, F_ENC)
        fix = torch.ones(members, T, B, 1)
        fix[:, -1] = 0.0
        self.fix = fix
        self.half = torch.full((members, T - 1, B, N), 0.5)

    def encode(self, s):
        """Frozen encoder of stimuli ``s [M, R, 2]`` -> ``[M, R, 40]``."""
        import torch

        (w0, b0), (w1, b1), (w2, b2) = self.enc
        h = torch.addcmul(b0, s[..., 0:1], w0[:, 0:1]).addcmul_(s[..., 1:2], w0[:, 1:2])
        h = torch.baddbmm(b1, h.relu_(), w1).relu_()
        return torch.baddbmm(b2, h, w2)

    def batch(self):
        """``(inputs [M, T, B, 41], targets [M, T, B, 24])`` of one fresh batch per network."""
        import torch

        m = self.m
        with torch.no_grad():
            x = torch.rand(m, B, D) - 0.5
            stim = x[:, None] + SIGMA * torch.randn(m, STIM, B, D)
            feats = self.encode(stim.reshape(m, STIM * B, D)).reshape(m, STIM, B, F_ENC)
            feats = torch.cat([self.blank_steps, feats, self.blank_steps], 1)
            inputs = torch.cat([self.fix, feats], -1)
            labels = (torch.matmul(x, self.normals) > 0).float()
            targets = torch.cat([self.half, labels[:, None]], 1)
        return inputs, targets

    def loss(self, inputs, targets):
        """Sum over networks of each one's mean BCE."""
        import torch
        import torch.nn.functional as F

        m = self.m
        drive = torch.baddbmm(self.b, inputs.reshape(m, T * B, F_IN), self.w_in)
        drive = drive.reshape(m, T, B, H)
        h = drive[:, 0].relu()                       # h_0 = 0: no h_0 @ W_rec
        hs = [h]
        for t in range(1, T):
            h = torch.baddbmm(drive[:, t], h, self.w_rec).relu()
            hs.append(h)
        hid = torch.stack(hs, 1).reshape(m, T * B, H)
        logits = torch.baddbmm(self.b_out, hid, self.w_out)
        return F.binary_cross_entropy_with_logits(
            logits, targets.reshape(m, T * B, N), reduction="sum") / (T * B * N)

    def step(self) -> None:
        inputs, targets = self.batch()
        self.opt.zero_grad(set_to_none=True)
        self._loss(inputs, targets).backward()
        self.opt.step()


def batched_runner(members: int, steps: int, threads: int, seed: int = 0,
                   compile: bool = False) -> Callable[[], None]:
    """Callable running ``steps`` training steps of `BatchedRNNs` (``members``) on
    ``threads`` PyTorch threads (set at every call); ``compile``: the loss (forward and
    backward) through ``torch.compile`` (its first call compiles, about half a minute)."""
    import torch

    nets = BatchedRNNs(members, seed, compile=compile)

    def run():
        torch.set_num_threads(threads)
        for _ in range(steps):
            nets.step()

    return run


def batched_builder(rank: int, procs: int, members: int, steps: int,
                    seed: int = 0) -> Callable[[], None]:
    """:class:`~benchmarks.common.ProcessPool` workload: this worker's share of the
    ``members`` networks (`split_range`), ``steps`` steps per run, one thread."""
    a, b = split_range(members, procs, rank)
    nets = BatchedRNNs(b - a, seed + rank)

    def run():
        for _ in range(steps):
            nets.step()

    return run


def torch_counted_flops(members: int = 1) -> float:
    """Matmul FLOPs per network-step that ``torch.utils.flop_counter.FlopCounterMode``
    counts in one step of `BatchedRNNs` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    nets = BatchedRNNs(members)
    nets.step()
    with FlopCounterMode(display=False) as counter:
        nets.step()
    return counter.get_total_flops() / members


def check_loss_matches_per_network(members: int = 3, seed: int = 0) -> float:
    """Max |gradient of network i in the stack - gradient of network i trained alone|
    (same weights and batch): the stacked loss gives each network its own gradient."""
    import torch

    nets = BatchedRNNs(members, seed)
    inputs, targets = nets.batch()
    nets.loss(inputs, targets).backward()
    stacked = [p.grad.clone() for p in nets.params]
    err = 0.0
    for i in range(members):
        one = BatchedRNNs(1, seed)
        with torch.no_grad():
            for p1, p in zip(one.params, nets.params):
                p1.copy_(p[i:i + 1])
        one.loss(inputs[i:i + 1], targets[i:i + 1]).backward()
        err = max(err, max(float((p1.grad[0] - g[i]).abs().max())
                           for p1, g in zip(one.params, stacked)))
    return err


# --------------------------------------------------------------------------
# One network, authors' style.
# --------------------------------------------------------------------------
def authors_runner(steps: int, threads: int, tans: Sequence[float] = ()) -> Callable[[], None]:
    """Callable running ``steps`` PyTorch training steps of one network on ``threads``,
    in the authors' style (``nn.Linear`` input and recurrent layers, a Python loop over
    the 22 time steps, ``nn.BCELoss`` on sigmoid outputs, ``torch.optim.Adam``), its batch
    generated with torch ops each step (cheaper than the authors' neurogym ``Dataset``,
    so this favours PyTorch)."""
    import torch
    import torch.nn as tnn

    torch.manual_seed(0)

    class RNN(tnn.Module):  # the authors' RNN.py shape: two nn.Linear, ReLU, alpha = 1
        def __init__(self):
            super().__init__()
            self.input2h = tnn.Linear(F_IN, H)
            self.h2h = tnn.Linear(H, H)
            self.alpha = 1.0

        def recurrence(self, x, h):
            return h * (1 - self.alpha) + self.alpha * torch.relu(self.input2h(x) + self.h2h(h))

        def forward(self, x):
            h = torch.zeros(x.shape[1], H)
            out = []
            for t in range(x.shape[0]):
                h = self.recurrence(x[t], h)
                out.append(h)
            return torch.stack(out)

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.rnn = RNN()
            self.fc = tnn.Linear(H, N)

        def forward(self, x):
            return torch.sigmoid(self.fc(self.rnn(x)))

    encoder = tnn.Sequential(tnn.Linear(D, 100), tnn.ReLU(), tnn.Linear(100, 100), tnn.ReLU(),
                             tnn.Linear(100, F_ENC)).requires_grad_(False)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=LR)
    criterion = tnn.BCELoss()
    tan = torch.as_tensor(np.asarray(tans or line_tans(), np.float32))

    def batch():
        x = torch.rand(B, D) - 0.5
        stim = torch.zeros(T, B, D)
        stim[1:T - 1] = x + SIGMA * torch.randn(STIM, B, D)
        fix = torch.ones(T, B, 1)
        fix[T - 1] = 0
        inputs = torch.cat([fix, encoder(stim)], -1)
        labels = (x[:, 1:2] > tan * x[:, 0:1]).float()
        target = torch.full((T, B, N), 0.5)
        target[T - 1] = labels
        return inputs, target

    def run():
        torch.set_num_threads(threads)
        for _ in range(steps):
            inputs, target = batch()
            opt.zero_grad()
            loss = criterion(net(inputs), target)
            loss.backward()
            opt.step()

    return run

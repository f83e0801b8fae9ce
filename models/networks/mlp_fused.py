"""Hand-written forward and backward of the paper's MLP (models.networks.PaperMLP), for speed.

Autograd records ~60 small nodes per training step of this network; at a batch of 400 throws the
bookkeeping, temporaries and separate bias/residual additions cost ~15 % of a step on a 2-core
CPU.  This autograd.Function computes the same function with in-place addmm accumulation and
returns only the parameter gradients (x and s get none: the caller falls back to the autograd
path when they require grad).  tests/models/test_networks.py checks it against that path.

Argument order (`PaperMLP._fused_arguments`): Bx (F, D), Bs (F, 1), Wx, bx, Ws, bs, then per hidden
layer W_h, b_h, W_e, b_e, gamma, beta, then W_out, b_out.
"""

from __future__ import annotations

import math
from typing import Any

import torch

_PER_LAYER = 6  # W_h, b_h, W_e, b_e, gamma, beta
_LN_EPS = 1e-6  # must equal models.networks.LAYER_NORM_EPS


def _fourier(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """[sin(2 pi x B^T), cos(2 pi x B^T)] as one sine with phases [0, pi/2]: (B, n) -> (B, 2F)."""
    n_freq = freqs.shape[0]
    weight = torch.cat([freqs, freqs]).t().mul(2.0 * math.pi)  # (n, 2F)
    phase = torch.zeros(2 * n_freq, dtype=x.dtype, device=x.device)
    phase[n_freq:] = 0.5 * math.pi
    return torch.addmm(phase, x, weight).sin_()


def _sigmoid_backward(grad: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    return torch.ops.aten.sigmoid_backward(grad, out)


class _PaperMLPFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, s: torch.Tensor, *params: torch.Tensor) -> torch.Tensor:
        bx, bs, wx, b_x, ws, b_s = params[:6]
        n_layers = (len(params) - 8) // _PER_LAYER
        fx = _fourier(x, bx)  # (B, 2F)
        fs = _fourier(s[:, None], bs)  # (B, 2F)
        hx = torch.addmm(b_x, fx, wx.t()).sigmoid_()  # (B, width)
        e = torch.addmm(b_s, fs, ws.t()).sigmoid_()  # (B, width)
        saved = [fx, fs, hx, e]
        h = hx
        for i in range(n_layers):
            w_h, b_h, w_e, b_e, gamma, beta = params[6 + _PER_LAYER * i : 6 + _PER_LAYER * (i + 1)]
            pre = torch.addmm(b_h + b_e, h, w_h.t()).addmm_(e, w_e.t())  # Dense(h) + Dense(e)
            normed, mean, rstd = torch.native_layer_norm(pre, (pre.shape[1],), gamma, beta, _LN_EPS)
            h = normed.sigmoid_()
            saved += [pre, mean, rstd, h]
        w_out, b_out = params[-2:]
        out = torch.addmm(b_out, h, w_out.t())
        ctx.n_layers = n_layers
        ctx.save_for_backward(*saved, *params[2:])
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx: Any, g_out: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        n = ctx.n_layers
        saved = ctx.saved_tensors
        fx, fs, hx, e = saved[:4]
        acts = saved[4 : 4 + 4 * n]
        params = saved[4 + 4 * n :]  # Wx, bx, Ws, bs, layers..., W_out, b_out
        w_out = params[-2]
        g_out = g_out.contiguous()
        h_last = acts[-1] if n else hx
        grads: list[torch.Tensor | None] = [None] * len(params)
        grads[-2] = torch.mm(g_out.t(), h_last)
        grads[-1] = g_out.sum(0)
        g_h = torch.mm(g_out, w_out)
        g_e: torch.Tensor | None = None
        for i in reversed(range(n)):
            pre, mean, rstd, h_i = acts[4 * i : 4 * (i + 1)]
            h_prev = acts[4 * (i - 1) + 3] if i > 0 else hx
            w_h, _, w_e, _, gamma, beta = params[4 + _PER_LAYER * i : 4 + _PER_LAYER * (i + 1)]
            g_norm = _sigmoid_backward(g_h, h_i)
            g_pre, g_gamma, g_beta = torch.ops.aten.native_layer_norm_backward(
                g_norm, pre, (pre.shape[1],), mean, rstd, gamma, beta, [True, True, True]
            )
            g_bias = g_pre.sum(0)
            base = 4 + _PER_LAYER * i
            grads[base : base + _PER_LAYER] = [
                torch.mm(g_pre.t(), h_prev),
                g_bias,
                torch.mm(g_pre.t(), e),
                g_bias.clone(),
                g_gamma,
                g_beta,
            ]
            g_h = torch.mm(g_pre, w_h)
            g_e = torch.mm(g_pre, w_e) if g_e is None else g_e.addmm_(g_pre, w_e)
        g_ax = _sigmoid_backward(g_h, hx)
        grads[0], grads[1] = torch.mm(g_ax.t(), fx), g_ax.sum(0)
        if g_e is not None:
            g_as = _sigmoid_backward(g_e, e)
            grads[2], grads[3] = torch.mm(g_as.t(), fs), g_as.sum(0)
        else:
            grads[2], grads[3] = torch.zeros_like(params[2]), torch.zeros_like(params[3])
        needs = ctx.needs_input_grad[4:]
        return (None, None, None, None, *(g if need else None for g, need in zip(grads, needs, strict=True)))


def paper_mlp_fused(x: torch.Tensor, s: torch.Tensor, params: list[torch.Tensor]) -> torch.Tensor:
    """The paper MLP on x (B, D) and s (B,) -> (B, D); gradients flow to params only."""
    return _PaperMLPFunction.apply(x, s, *params)

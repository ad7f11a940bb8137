"""The normalisations of Fisher vectors (Wieschollek et al., eqs. 5-6): the signed power and the L2
normalisation of rows, differentiable (with a bounded gradient at 0) or in place without autograd."""

from __future__ import annotations

import torch


class _SignedPower(torch.autograd.Function):
    """sign(z)|z|^alpha with a finite gradient everywhere: alpha max(|z|, eps)^(alpha-1), 0 at z = 0."""

    @staticmethod
    def forward(ctx, z, alpha, eps):
        a = z.abs()
        ctx.save_for_backward(a)
        ctx.alpha, ctx.eps = alpha, eps
        return z.sign() * a.pow(alpha)

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        slope = ctx.alpha * a.clamp_min(ctx.eps).pow(ctx.alpha - 1)
        return grad * torch.where(a > 0, slope, torch.zeros_like(slope)), None, None


def power_normalize(z: torch.Tensor, alpha: float = 0.5, eps: float = 1e-12) -> torch.Tensor:
    """Signed power sign(z)|z|^alpha (eq. 5); its gradient is 0 at z = 0 and bounded near it."""
    if alpha == 1:
        return z
    return _SignedPower.apply(z, float(alpha), float(eps))


def normalize_fv(
    fv: torch.Tensor, power: float | None = 0.5, l2: bool = True, eps: float = 1e-12
) -> torch.Tensor:
    """Signed power (``power`` = alpha, None to skip) then L2 normalisation of rows (``l2``)."""
    if not (torch.is_grad_enabled() and fv.requires_grad):
        return normalize_fv_inplace(fv.clone(), power, l2, eps)
    if power is not None:
        fv = power_normalize(fv, power, eps)
    if l2:
        fv = fv / fv.norm(dim=-1, keepdim=True).clamp_min(eps)
    return fv


@torch.no_grad()
def normalize_fv_inplace(fv: torch.Tensor, power: float | None, l2: bool, eps: float = 1e-12) -> torch.Tensor:
    """:func:`normalize_fv` in place, without autograd (the same arithmetic)."""
    if power is not None and power != 1:
        a = fv.abs()
        torch.copysign(a.sqrt_() if power == 0.5 else a.pow_(power), fv, out=fv)
    if l2:
        fv.div_(torch.linalg.vector_norm(fv, dim=-1, keepdim=True).clamp_min_(eps))
    return fv

"""Figures with matplotlib (optional extra ``plots``): learning curves and the gradient field."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.fileio import atomic_write_bytes
from training.gradient import numerical_gradient


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    atomic_write_bytes(path, buf.getvalue())


def plot_learning_curve(history: Sequence[dict[str, float]], path: str | Path, title: str = "") -> None:
    """Train/test loss and accuracy per epoch, side by side, as a PNG at ``path``."""
    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split, style in (("train", "-"), ("test", "--")):
        ax_loss.plot(epochs, [h[f"{split}_loss"] for h in history], style, label=split)
        ax_acc.plot(epochs, [h[f"{split}_accuracy"] for h in history], style, label=split)
    ax_loss.set(xlabel="epoch", ylabel="loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    _save(fig, path)
    plt.close(fig)


def function_2(x: np.ndarray) -> float:
    """f(x0, x1) = x0^2 + x1^2, the chapter's example function."""
    return float(np.sum(x**2))


def plot_gradient_field(path: str | Path, lim: float = 2.0, step: float = 0.25) -> None:
    """The textbook's quiver plot: -grad f of f(x0, x1) = x0^2 + x1^2 on a grid, as a PNG."""
    plt = _pyplot()
    grid = np.arange(-lim, lim + step / 2, step)
    x0, x1 = np.meshgrid(grid, grid)
    points = np.stack([x0.ravel(), x1.ravel()], axis=1)
    grads = np.array([numerical_gradient(function_2, p.copy()) for p in points])
    fig, ax = plt.subplots(figsize=(5.5, 5.5))
    ax.quiver(points[:, 0], points[:, 1], -grads[:, 0], -grads[:, 1], angles="xy", color="#666666")
    ax.set(
        xlim=(-lim, lim),
        ylim=(-lim, lim),
        xlabel="x0",
        ylabel="x1",
        title="-∇f for f(x0, x1) = x0² + x1² (numerical gradient)",
    )
    ax.grid(alpha=0.3)
    ax.set_aspect("equal")
    _save(fig, path)
    plt.close(fig)


def main() -> int:
    """``python -m training.plots [PATH]``: render the gradient field (default docs/gradient_field.png)."""
    import sys

    path = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/gradient_field.png")
    plot_gradient_field(path)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

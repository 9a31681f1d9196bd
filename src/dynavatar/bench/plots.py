"""Pictures of a run for people to look at: the training curve beside the fitted avatar.

matplotlib is optional (the plot is skipped without it) and drawn off-screen (Agg backend).
"""

from __future__ import annotations

import json
from pathlib import Path

__all__ = ["save_training_plot"]


def save_training_plot(history: list[dict], out: str | Path) -> Path | None:
    """``out/training_curve.png`` (loss, log scale, and training PSNR against the step) and the
    ``history`` itself as ``out/history.json``; -> the PNG, or None without a history or matplotlib."""
    if not history:
        return None
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # pragma: no cover
        return None
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(1, 2, figsize=(9, 3))
    steps = [h["step"] for h in history]
    ax[0].plot(steps, [h["loss"] for h in history]); ax[0].set_title("loss"); ax[0].set_yscale("log")  # noqa: E702
    ax[1].plot(steps, [h["psnr"] for h in history]); ax[1].set_title("train PSNR [dB]")  # noqa: E702
    fig.tight_layout()
    fig.savefig(out / "training_curve.png", dpi=100)
    plt.close(fig)
    (out / "history.json").write_text(json.dumps(history, indent=1))
    return out / "training_curve.png"

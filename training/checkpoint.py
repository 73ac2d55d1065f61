"""Resumable training state on disk: weights, generator state, position and history in one .npz."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from training.fileio import atomic_write_with
from training.nets import PARAM_NAMES, TwoLayerNet
from training.trainer import TrainConfig, TrainState

CHECKPOINT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint is missing, corrupt, or belongs to a different run; names the file."""


def save_checkpoint(
    path: str | Path, state: TrainState, config: TrainConfig, dataset: dict[str, Any]
) -> None:
    """Write ``state`` atomically; ``dataset`` identifies the data (name and file hashes)."""
    meta = {
        "checkpoint_version": CHECKPOINT_VERSION,
        "config": config.to_dict(),
        "dataset": dataset,
        "epoch": state.epoch,
        "step": state.step,
        "rng": state.rng.bit_generator.state,
        "history": state.history,
        "seconds": state.seconds,
        "running": state.running,
        "best_loss": state.best_loss if state.best_params is not None else None,
        "best_epoch": state.best_epoch,
    }
    arrays = {k: state.net.params[k] for k in PARAM_NAMES}
    if state.best_params is not None:  # early stopping's best weights so far
        arrays |= {f"best_{k}": state.best_params[k] for k in PARAM_NAMES}
    order = state.order if state.order is not None else np.empty(0, dtype=np.intp)

    def write(fh: Any) -> None:
        np.savez(fh, state=np.array(json.dumps(meta)), order=order, **arrays)  # type: ignore[arg-type]

    atomic_write_with(path, write)


def load_checkpoint(path: str | Path, config: TrainConfig, dataset: dict[str, Any]) -> TrainState:
    """Restore a state saved by ``save_checkpoint`` for the same config and data, or raise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as npz:
            meta = json.loads(str(npz["state"]))
            params = {k: np.array(npz[k]) for k in PARAM_NAMES}
            order = np.array(npz["order"])
            best = {k: np.array(npz[f"best_{k}"]) for k in PARAM_NAMES} if "best_W1" in npz else None
    except FileNotFoundError:
        raise CheckpointError(f"{path}: no such checkpoint") from None
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{path}: not a valid checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("checkpoint_version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: unknown checkpoint version")
    saved = TrainConfig.from_dict(meta["config"])
    if saved != config:
        diff = sorted(k for k, v in config.to_dict().items() if saved.to_dict().get(k) != v)
        raise CheckpointError(
            f"{path}: was written with different settings ({', '.join(diff)}); "
            "resume with the same options or start a new run without --resume"
        )
    if meta["dataset"] != dataset:
        raise CheckpointError(f"{path}: was written for different data; resume with the same dataset")
    net = TwoLayerNet.from_params(params, loss_name=config.loss)  # type: ignore[arg-type]
    rng = np.random.default_rng()
    rng.bit_generator.state = meta["rng"]
    return TrainState(
        net=net,
        rng=rng,
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        order=order if order.size else None,
        history=list(meta["history"]),
        seconds=float(meta["seconds"]),
        running=list(meta.get("running", [0.0, 0.0, 0.0])),
        best_loss=float(meta["best_loss"]) if best is not None else float("inf"),
        best_epoch=int(meta.get("best_epoch", 0)),
        best_params=best,
    )

"""Weight snapshots of one EfficientNet-Lite as one network, and the file format that stores them small.

A surrogate file (``.npz``, read without pickle) holds one or more weight *snapshots* of one base network
(``tools/train_surrogate.py`` writes it), each as the difference from the base's weights rounded to fp16,
rounded to 2 x LEVELS + 1 values per output channel of each weight tensor (vectors whole) and LZMA-compressed:
a snapshot costs about 15% of its fp32 weights (2.8 MB for Lite0).
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .cache import WeightsUnavailable, sha256_of

FORMAT = "scenepriv-surrogate-1"
# Each difference of a weight tensor is rounded to one of 2 x LEVELS + 1 values per output channel: an error of at
# most 1/30 of the channel's largest change (a few percent of a typical change), about 4 bits a weight compressed.
# Vectors (biases, batch-norm scales and statistics) are small and stored whole, in float32.
LEVELS = 15


def delta_arrays(base: Mapping[str, torch.Tensor], snapshot: Mapping[str, torch.Tensor],
                 levels: int = LEVELS) -> dict[str, np.ndarray]:
    """The differences ``snapshot - fp16(base)`` of weight tensors as integers in [-levels, levels] (int8) and their
    float32 scales (one per output channel), by name; vectors whole (``name/whole``, float32). Integer tensors
    (batch-norm counters) are left out: they do not change what a network computes.
    """
    arrays: dict[str, np.ndarray] = {}
    for name, tensor in base.items():
        if not tensor.is_floating_point():
            continue
        if tensor.ndim <= 1:
            arrays[name + "/whole"] = snapshot[name].detach().float().cpu().numpy()
            continue
        difference = snapshot[name].detach().float().cpu() - tensor.detach().half().float().cpu()
        rows = difference.reshape(len(difference), -1) if difference.ndim > 1 else difference.reshape(1, -1)
        scale = rows.abs().amax(1).clamp_min(1e-12) / levels
        quantised = (rows / scale[:, None]).round().clamp(-levels, levels).to(dtype=torch.int8)
        arrays[name] = quantised.reshape(difference.shape).numpy()
        arrays[name + "/scale"] = scale.numpy().astype(np.float32)
    return arrays


def save(path: str | Path, base: Mapping[str, torch.Tensor], snapshots: Sequence[Mapping[str, torch.Tensor]],
         meta: Mapping[str, object], levels: int = LEVELS) -> None:
    """Write ``snapshots`` (state dicts of the base's architecture) as a surrogate file, compressed."""
    arrays: dict[str, np.ndarray] = {"meta": np.array(json.dumps({"format": FORMAT, "snapshots": len(snapshots),
                                                                  "levels": levels, **meta}))}
    for index, snapshot in enumerate(snapshots):
        arrays.update({f"{index}:{name}": value for name, value in delta_arrays(base, snapshot, levels).items()})
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_LZMA) as archive:  # an .npz, LZMA-compressed
        for name, array in arrays.items():
            with archive.open(name + ".npy", "w") as member:
                np.lib.format.write_array(member, array, allow_pickle=False)
    Path(path).write_bytes(buffer.getvalue())


def read_meta(path: str | Path) -> dict:
    """The metadata of a surrogate file (base, method, settings, snapshots), or ValueError naming the file."""
    try:
        with np.load(path, allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: not a scenepriv surrogate file ({error})") from None
    if meta.get("format") != FORMAT:
        raise ValueError(f"{path}: not a scenepriv surrogate file (format {meta.get('format')!r})")
    return meta


def snapshot_states(path: str | Path, base: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """The state dicts of every snapshot of a surrogate file, rebuilt on ``base`` (rounded to fp16 first)."""
    meta = read_meta(path)
    states = []
    with np.load(path, allow_pickle=False) as data:
        for index in range(int(meta["snapshots"])):
            state = {}
            for name, tensor in base.items():
                if not tensor.is_floating_point():
                    state[name] = tensor.clone()
                    continue
                key = f"{index}:{name}"
                if key + "/whole" in data and tuple(data[key + "/whole"].shape) == tuple(tensor.shape):
                    state[name] = torch.from_numpy(data[key + "/whole"]).to(tensor.dtype)
                    continue
                if key not in data:
                    raise ValueError(f"{path}: snapshot {index} lacks tensor {name}: not made for this base network")
                quantised = torch.from_numpy(data[key]).float()
                if quantised.shape != tensor.shape:
                    raise ValueError(f"{path}: tensor {name} has shape {tuple(quantised.shape)}, "
                                     f"expected {tuple(tensor.shape)}")
                scale = torch.from_numpy(data[key + "/scale"]).float()
                rows = quantised.reshape(len(quantised), -1) if quantised.ndim > 1 else quantised.reshape(1, -1)
                difference = (rows * scale[:, None]).reshape(tensor.shape)
                state[name] = (tensor.half().float() + difference).to(tensor.dtype)
            states.append(state)
    return states


class SnapshotEnsemble(nn.Module):
    """Several weight snapshots of one architecture as one network.

    With gradients enabled each call runs the next snapshot in turn (so an attack's iterations cycle through
    them at the cost of one model, as LGV attacks its collection); without gradients (judging a result,
    confirming it, the final verdict) it returns the mean of every snapshot's logits.
    """

    def __init__(self, members: Sequence[nn.Module]) -> None:
        super().__init__()
        if not members:
            raise ValueError("a snapshot ensemble needs at least one network")
        self.members = nn.ModuleList(members)
        self.turn = 0  # the member the next gradient pass runs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if len(self.members) == 1:
            return self.members[0](x)
        if torch.is_grad_enabled():
            member = self.members[self.turn % len(self.members)]
            self.turn += 1
            return member(x)
        return torch.stack([member(x) for member in self.members]).mean(0)



def build(path: str | Path, *, base_weights: str | None = None, sha256: str | None = None) -> nn.Module:
    """The :class:`SnapshotEnsemble` of a surrogate file on its base EfficientNet-Lite (from ``base_weights`` or its
    package); with ``sha256`` the file must have that SHA-256 (a shipped file), or WeightsUnavailable says so."""
    from .imagenet import efficientnet_lite

    path = Path(path)
    if not path.is_file():
        raise WeightsUnavailable(f"surrogate weights {path} not found (or not a regular file)")
    if sha256 is not None and (actual := sha256_of(path)) != sha256:
        raise WeightsUnavailable(f"{path}: SHA-256 {actual} differs from the recorded {sha256}: the file is damaged "
                                 "or was replaced; reinstall scenepriv")
    meta = read_meta(path)
    base = efficientnet_lite(int(meta["base_variant"]), base_weights)
    members = []
    for state in snapshot_states(path, base.state_dict()):
        member = efficientnet_lite(int(meta["base_variant"]), base_weights)
        member.load_state_dict(state, strict=True)
        members.append(member.eval())
    return SnapshotEnsemble(members)



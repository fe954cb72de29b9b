"""Training checkpoints a resume can trust: `last_checkpoint(out_dir / "checkpoints")`.

The Trainer writes a checkpoint every save_steps and trainer_state.json last; a SIGKILL or a
full disk during a save leaves a folder that is incomplete or cut short. `checkpoint_ok` checks
what a resume reads, and `last_checkpoint` falls back past damaged ones (deleting them on rank 0).
"""
from __future__ import annotations

import shutil
from pathlib import Path


def _safetensors_ok(path: Path) -> bool:
    """The header parses and the file is as long as the header says (a cut file is not)."""
    import json
    import struct

    try:
        with open(path, "rb") as f:
            (n,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(n))
        end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
        return path.stat().st_size == 8 + n + end
    except (OSError, ValueError, KeyError, struct.error):
        return False


def checkpoint_ok(path: Path) -> bool:
    """A checkpoint a resume can use: its trainer state parses, its weights are whole, and its
    .pt/.bin archives open (their central directory is at the end, so a cut file fails)."""
    import json
    import zipfile

    try:
        if "global_step" not in json.loads((path / "trainer_state.json").read_text()):
            return False
    except (OSError, ValueError):
        return False
    if not all(_safetensors_ok(f) for f in path.glob("*.safetensors")):
        return False
    # torch.save writes zip archives (optimizer.pt, scheduler.pt, training_args.bin, rng *.pth)
    return all(zipfile.is_zipfile(f) for pattern in ("*.pt", "*.bin", "*.pth")
               for f in path.glob(pattern))


def last_checkpoint(ckpt_dir: Path, *, clean: bool = True) -> Path | None:
    """The newest usable checkpoint (checkpoint_ok: trainer_state.json is written last, and a
    damaged newest one falls back to the one before); newer unusable ones are deleted when
    `clean` (rank 0)."""
    found = sorted(ckpt_dir.glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[-1]))
    usable = None
    for p in reversed(found):
        if checkpoint_ok(p):
            usable = p
            break
        if clean:
            shutil.rmtree(p, ignore_errors=True)
    return usable


def tokens_at(checkpoint: Path) -> int:
    import json

    return json.loads((checkpoint / "trainer_state.json").read_text()).get(
        "num_input_tokens_seen", 0)

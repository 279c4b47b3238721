"""The galleries the search benchmark times, larger than anything built here: how they are simulated.

- :func:`build_replica_store`: a physical store of ``n`` references made from a seed database's, each rotated by
  whole stage-4 columns and given per-channel gains (a rotated tile is a valid polar image), so every byte a
  search reads is real and distinct;
- :class:`ModuloGallery`: a million references served as ``i mod S`` of a physical store, for the alignment cost;
- :func:`simulated_first_stage`: a two-stage index over such a gallery with noisy copies of the seed descriptors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..model import StageMaps
from ..retrieval.database import DatabaseError, ReferenceDatabase, gate_stages
from ..retrieval.database_writer import DatabaseWriter
from ..retrieval.index import FirstStageIndex, compute_first_stage


def rotated_blocks(maps: torch.Tensor, axis: int, roll: np.ndarray, blocks: int) -> torch.Tensor:
    """``maps`` (in place) with reference i rolled by ``roll[i]`` of ``blocks`` equal column blocks along ``axis``."""
    m = maps.shape[axis] // blocks
    for r in np.unique(roll):
        sel = torch.as_tensor(np.flatnonzero(roll == r))
        maps[sel] = torch.roll(maps[sel], int(r) * m, dims=axis)
    return maps


def build_replica_store(seed_db: ReferenceDatabase, out: Path, n: int, seed: int = 0, chunk: int = 256,
                        store: str = "fp16") -> Path:
    """A physical store of ``n`` references made from the ``seed_db`` ones without the network: reference ``i`` is
    seed reference ``i mod S`` rotated by a random number of stage-4 columns (all stages and masks together: a
    rotated tile is a valid polar image) with random per-channel gains of 1 +- 0.1, stored as ``store``. Reused when
    present."""
    try:
        db = ReferenceDatabase.open(out, seed_db.checkpoint_sha, seed_db.config)
        if len(db) == n and db.store.name == store:
            return out
    except DatabaseError:
        pass
    config = seed_db.config
    plan = {"replica_of": seed_db.checkpoint_sha, "seed_references": len(seed_db), "seed": seed, "store": store}
    writer = DatabaseWriter(out, config, plan, n, chunk, overwrite=True, store=store)
    rng = np.random.default_rng(seed)
    o = config.sat_width // 32
    writer.write_paths([f"replica of {seed_db.paths[i % len(seed_db)]}" for i in range(n)])
    writer.write_extra("latlon", np.stack([40 + rng.random(n), -75 + rng.random(n)], axis=1))
    seed_feats = {s: torch.from_numpy(np.asarray(seed_db.array(f"features_{s}"))) for s in config.stages}  # NWCH
    seed_masks = {s: torch.from_numpy(seed_db.mask_array(s)) for s in range(1, 5)} if config.use_ca else {}
    seed_gates = {s: torch.from_numpy(np.asarray(seed_db.array(f"gates_{s}"))) for s in gate_stages(config)}
    for c in writer.pending_chunks():
        start, stop = writer.chunk_range(c)
        src = torch.as_tensor(np.arange(start, stop) % len(seed_db))
        roll = rng.integers(0, o, stop - start)
        gains = torch.as_tensor(1 + 0.1 * rng.standard_normal((stop - start, 512)), dtype=torch.float16)
        feats, masks, gates = [torch.empty(0)] * 4, [torch.empty(0)] * 4, [torch.empty(0)] * 4
        for s, f in seed_feats.items():  # column-major: a rotation is a roll of the outermost (column) axis
            out = rotated_blocks(f[src] * gains[:, None, : f.shape[2], None].clamp(0.5, 1.5), 1, roll, o)
            feats[s - 1] = out.permute(0, 2, 3, 1)  # the N x C x H x W view write_chunk expects
        for s, f in seed_masks.items():  # R x H x W
            masks[s - 1] = rotated_blocks(f[src].clone(), 2, roll, o)
        for s, f in seed_gates.items():  # R x C x W
            gates[s - 1] = rotated_blocks(f[src].clone(), 2, roll, o)
        thumbs = np.stack([seed_db.thumbnail(int(i)) for i in src])
        writer.write_chunk(c, StageMaps(feats, masks if config.use_ca else None, gates=gates if config.use_ca
                                        else None), thumbs)
    for name, array in compute_first_stage(writer.read_maps, n, config).items():
        writer.write_extra(name, array)
    meta = {k: seed_db.metadata[k] for k in ("checkpoint", "first_stage")}
    meta["source"] = {"kind": "bench-replica", "seed_database": str(seed_db.path), "seed": seed}
    return writer.finish(meta)


class ModuloGallery:
    """A gallery of ``size`` references whose reference ``i`` is physical reference ``i mod P`` (the second-stage
    reads of a simulated large gallery hit the smaller physical store)."""

    def __init__(self, db: ReferenceDatabase, size: int):
        self.db, self.size, self.physical = db, size, len(db)

    def __len__(self):
        return self.size

    def slice(self, start, stop):
        a, b = start % self.physical, (stop - 1) % self.physical + 1
        if b - a == stop - start:  # contiguous in the physical store: a zero-copy view
            return self.db.slice(a, b)
        return self.db.gather(np.arange(start, stop) % self.physical)

    def gather(self, indices):
        return self.db.gather(np.asarray(indices) % self.physical)


def simulated_first_stage(db: ReferenceDatabase, size: int, seed: int = 0, noise: float = 0.25) -> FirstStageIndex:
    """First-stage descriptors for ``size`` references: the real ones of the physical store, then copies of them
    rotated by a random number of blocks with Gaussian noise (``noise`` x the descriptors' std) added, so the
    distractors are as many distinct vectors as a real gallery of that size would hold."""
    blocks = np.asarray(db.array("first_stage_blocks"))
    energy = np.asarray(db.array("first_stage_energy"))
    p, o, d = blocks.shape
    if size <= p:
        return FirstStageIndex(db.config, db.array("first_stage_projection"), blocks[:size], energy[:size])
    rng = np.random.default_rng(seed)
    std = float(blocks.astype(np.float32).std())
    out_b = np.empty((size, o, d), np.float16)
    out_e = np.empty((size, o), np.float32)
    out_b[:p], out_e[:p] = blocks, energy
    step = 16384  # float32 working copies of 32 MB each: the simulation adds little to the peak RSS
    for start in range(p, size, step):
        stop = min(size, start + step)
        src = np.arange(start, stop) % p
        cols = (np.arange(o)[None, :] + rng.integers(0, o, stop - start)[:, None]) % o
        b = blocks[src[:, None], cols].astype(np.float32)
        b += rng.standard_normal(b.shape, dtype=np.float32) * (noise * std)
        out_b[start:stop] = b.astype(np.float16)
        out_e[start:stop] = energy[src[:, None], cols]
    return FirstStageIndex(db.config, db.array("first_stage_projection"), out_b, out_e)


# --------------------------------------------------------------------------------------------- measuring

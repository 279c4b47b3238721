"""Compact codes of a reference store (``build_db --store``): what a quantized database holds and how it decodes.

A quantized store keeps, per reference:

- features: unsigned uniform codes (8, 4 or 2 bits per stage, :data:`FEATURE_BITS`; 4- and 2-bit codes packed
  two or four to a byte over each column's C x H values) with one float16 step
  per (reference, stage, channel): ``decoded = float16(float32(code) * float32(step))``. The stage maps are ReLU
  outputs (>= 0), so the codes start at 0 and the step is ``max / (2^bits - 1)`` of that channel's map.
- the CA column gates: 8-bit codes with a float16 (low, step) pair per (reference, channel) over the columns:
  ``decoded = float16(low + code * step)`` in float32.
- the attention masks (values in [0, 1]): 8-bit codes of ``mask * 255``, ``decoded = float16(code / 255)``.
- the thumbnail as a JPEG (quality :data:`JPEG_QUALITY`).

The decoded values *are* the stored values: the column and gate energies are computed from them when the database
is written, and the search (its fp16 first pass and float64 re-check included) works on them, so its answers are
exact with respect to the decoded store. Decoding is elementwise IEEE arithmetic (one float32 multiply, or
multiply and add, then rounding to float16), the same on every CPU and GPU.

Each store kind is one :class:`StoreKind` in :data:`STORES`, looked up by name where a name comes in (``--store``,
a database's ``metadata.json``); the writer, the reader and the layout ask it, never the name. A new kind is a new
entry there (the store tests run over every entry).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

GATE_BITS = 8
MASK_LEVELS = 255
JPEG_QUALITY = 85
THUMBNAIL_JPEG_NAME = "thumbnails.jpg.bin"  # a store's JPEG thumbnails, one after another
THUMBNAIL_OFFSETS = "thumbnail_offsets"  # where each one starts (int64, R + 1)


def packed_size(n: int, bits: int) -> int:
    per_byte = 8 // bits
    if n % per_byte:
        raise ValueError(f"{bits}-bit codes are packed {per_byte} to a byte along an axis of {n} values")
    return n // per_byte


def _as_tensor(a) -> torch.Tensor:
    return a if isinstance(a, torch.Tensor) else torch.from_numpy(np.asarray(a))


# ------------------------------------------------------------------------------------------------ features


def encode_features(cols: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Column-major stage maps ``cols`` (N x W x C x H, >= 0) -> (uint8 codes N x W x C*H*bits/8: each column's
    C x H values packed, float16 steps N x C). Each value is within half a step (plus the step's float16 rounding)
    of its code's decoded value."""
    x = cols.float()
    if (x < 0).any():
        raise ValueError("quantized stores hold non-negative stage maps (ReLU outputs); these have negative values: "
                         "build the database with --store fp16")
    levels = 2**bits - 1
    step = (x.amax(dim=(1, 3)) / levels).half()  # N x C
    safe = torch.where(step.float() > 0, step.float(), torch.ones_like(step, dtype=torch.float32))
    codes = torch.round(x / safe[:, None, :, None]).clamp_(0, levels).to(torch.uint8)
    return pack(codes.flatten(2), bits), step


def decode_features(codes, step, bits: int) -> torch.Tensor:
    """float16 N x W x C x H of :func:`encode_features`' codes and steps (tensors or arrays)."""
    step = _as_tensor(step)
    c = unpack(_as_tensor(codes), bits)
    c = c.reshape(*c.shape[:2], step.shape[1], -1)
    # (a one-pass torch.mul(uint8 codes, float16 steps) gives the same bits but measured slower in the search)
    return (c.float() * step.float()[:, None, :, None]).half()


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """uint8 codes (< 2^bits) packed along the last axis, 8 / bits to a byte, the first in the lowest bits."""
    if bits not in (8, 4, 2):
        raise ValueError(f"codes are 8, 4 or 2 bits, not {bits}")
    per_byte = 8 // bits
    packed_size(codes.shape[-1], bits)
    out = codes[..., 0::per_byte].clone()
    for i in range(1, per_byte):
        out |= codes[..., i::per_byte] << (bits * i)
    return out


def unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    if bits not in (8, 4, 2):
        raise ValueError(f"codes are 8, 4 or 2 bits, not {bits}")
    if bits == 8:
        return packed
    per_byte, mask = 8 // bits, 2**bits - 1
    out = torch.stack([(packed >> (bits * i)) & mask for i in range(per_byte)], dim=-1)
    return out.reshape(*packed.shape[:-1], packed.shape[-1] * per_byte)


# ------------------------------------------------------------------------------------------- gates and masks


def encode_gates(gates: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CA column gates N x C x W -> (uint8 codes N x C x W, float16 N x C x 2: low, step per channel)."""
    g = gates.float()
    levels = 2**GATE_BITS - 1
    low = g.amin(dim=2).half().float()
    high = g.amax(dim=2)
    step = ((high - low) / levels).half()
    safe = torch.where(step.float() > 0, step.float(), torch.ones_like(low))
    codes = torch.round((g - low[..., None]) / safe[..., None]).clamp_(0, levels).to(torch.uint8)
    return codes, torch.stack([low.half(), step], dim=-1)


def decode_gates(codes, scale) -> torch.Tensor:
    """float16 N x C x W of :func:`encode_gates`' codes and (low, step) pairs."""
    s = _as_tensor(scale).float()
    return (s[..., 0:1] + _as_tensor(codes).float() * s[..., 1:2]).half()


def encode_masks(masks: torch.Tensor) -> torch.Tensor:
    return torch.round(masks.float().clamp(0, 1) * MASK_LEVELS).to(torch.uint8)


def decode_masks(codes) -> torch.Tensor:
    return (_as_tensor(codes).float() * (1.0 / MASK_LEVELS)).half()


# ------------------------------------------------------------------------------------------------ thumbnails


def encode_thumbnail(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", np.ascontiguousarray(rgb[:, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ValueError("JPEG encoding of a thumbnail failed")
    return buf.tobytes()


def decode_thumbnail(data) -> np.ndarray:
    bgr = cv2.imdecode(np.frombuffer(bytes(data), dtype=np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError("a stored thumbnail is not a readable JPEG; the database is damaged, rebuild it")
    return np.ascontiguousarray(bgr[:, :, ::-1])


class DecodedRows:
    """A stored code array read like the decoded array: ``rows[index]`` decodes only the rows asked for."""

    def __init__(self, decode, arrays: tuple, shape: tuple[int, ...]):
        self._decode, self._arrays, self.shape = decode, arrays, shape
        self.dtype = np.dtype(np.float16)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index) -> np.ndarray:
        if isinstance(index, (int, np.integer)):
            return self[int(index): int(index) + 1][0]
        return self._decode(*(a[index] for a in self._arrays)).numpy()

    def __array__(self, dtype=None, copy=None):
        out = self[:]
        return out if dtype is None else out.astype(dtype)


class DeferredMaps:
    """Maps of a quantized store that stand in for their float16 decoding (``shape``, ``dtype``, ``device``, slicing
    along N, ``to``) and decode only when read: any torch function or tensor method decodes them once, with the
    same arithmetic as ``decode(*arrays)``, so a deferred and an eager decoding give the same bits. A search reads
    the attention masks only for the top-k and the features only in their windows (:class:`CodedStage`)."""

    dtype = torch.float16

    def __init__(self, decode, arrays: tuple, shape: tuple[int, ...]):
        self._decode, self.arrays, self.shape = decode, tuple(arrays), torch.Size(shape)
        self._decoded: torch.Tensor | None = None

    def _like(self, arrays: tuple) -> DeferredMaps:
        return DeferredMaps(self._decode, arrays, (len(arrays[0]), *self.shape[1:]))

    @property
    def device(self) -> torch.device:
        return self.arrays[0].device

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, index):
        """References ``index`` (a slice, or a list or array of indices) stay deferred; any other index reads
        the decoded maps."""
        if isinstance(index, list):
            index = torch.as_tensor(index, dtype=torch.long)
        if isinstance(index, (slice, torch.Tensor, np.ndarray)):
            return self._like(tuple(a[index] for a in self.arrays))
        return self.decoded()[index]

    def to(self, *args, **kwargs):
        probe = torch.empty(0, dtype=self.dtype).to(*args, **kwargs)
        if probe.dtype != self.dtype:  # another dtype needs the values
            return self.decoded().to(*args, **kwargs)
        return self._like(tuple(a.to(probe.device) for a in self.arrays))

    def decoded(self) -> torch.Tensor:
        if self._decoded is None:
            self._decoded = self._decode(*self.arrays)
        return self._decoded

    def __getattr__(self, name):  # a tensor method (permute, float, reshape ...): on the decoded maps
        if name.startswith("_") or name in ("arrays", "shape"):
            raise AttributeError(name)
        return getattr(self.decoded(), name)

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        def plain(x):
            if isinstance(x, DeferredMaps):
                return x.decoded()
            return type(x)(plain(v) for v in x) if isinstance(x, (list, tuple)) else x

        return func(*plain(args), **{k: plain(v) for k, v in (kwargs or {}).items()})


def deferred_masks(codes: torch.Tensor) -> DeferredMaps:
    return DeferredMaps(decode_masks, (codes,), codes.shape)


class WindowRows(DeferredMaps):
    """Deferred stage features whose window columns a search can read alone (:meth:`window_rows`)."""

    def window_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """float16 len(rows) x (C*H): the columns ``rows`` of the (N*W) x (C*H) column view (row ``r * W + j`` is
        column j of reference r)."""
        raise NotImplementedError


class CodedStage(WindowRows):
    """One stage's features of a quantized store (codes N x W x packed C*H, steps N x C) as deferred N x C x H x W
    float16 maps whose window columns :meth:`window_rows` decodes alone: a 90 deg query reads a quarter of each map,
    and decoding whole chunks made the search slower still (docs/results.md, "Compact stores")."""

    def __init__(self, codes: torch.Tensor, step: torch.Tensor, bits: int):
        n, w, packed = codes.shape
        c = step.shape[1]
        self.bits = bits
        super().__init__(self._decode_all, (codes, step), (n, c, packed * (8 // bits) // c, w))

    def _like(self, arrays: tuple) -> CodedStage:
        return CodedStage(*arrays, self.bits)

    def _decode_all(self, codes, step) -> torch.Tensor:
        return decode_features(codes, step, self.bits).permute(0, 2, 3, 1)  # a view of the column-major decoding

    def window_rows(self, rows: torch.Tensor) -> torch.Tensor:
        """float16 len(rows) x (C*H): the columns ``rows`` of the (N*W) x (C*H) column view (row ``r * W + j`` is
        column j of reference r), decoded from their codes only."""
        codes, step = self.arrays
        n, c, h, w = self.shape
        picked = torch.index_select(codes.reshape(n * w, -1), 0, rows)
        values = unpack(picked, self.bits).reshape(len(rows), c, h).float()
        row_step = torch.index_select(step, 0, torch.div(rows, w, rounding_mode="floor")).float()
        return (values * row_step[:, :, None]).half().reshape(len(rows), c * h)


class GatheredStage(WindowRows):
    """The references ``index`` of a whole stored stage (a :class:`CodedStage`, or the fp16 store's N x W x C x H
    array), read where a search reads them: :meth:`window_rows` reads their window columns from the store's rows, so
    a two-stage re-rank of M candidates reads M windows instead of copying M whole maps; any other use gathers the
    whole maps, as an eager gather would."""

    def __init__(self, whole, index: torch.Tensor):
        self.whole = whole
        shape = whole.shape if isinstance(whole, CodedStage) else (whole.shape[0], *whole.shape[2:], whole.shape[1])
        super().__init__(self._gather, (index,), (len(index), *shape[1:]))

    def _like(self, arrays: tuple) -> GatheredStage:
        return GatheredStage(self.whole, arrays[0])

    def to(self, *args, **kwargs):
        probe = torch.empty(0, dtype=self.dtype).to(*args, **kwargs)
        if probe.dtype != self.dtype or probe.device != self.device:  # the store stays where it is mapped
            return self.decoded().to(*args, **kwargs)
        return self

    def _gather(self, index: torch.Tensor) -> torch.Tensor:
        if isinstance(self.whole, CodedStage):
            return self.whole[index].decoded()
        return self.whole[index].permute(0, 2, 3, 1)  # the column-major copy an eager gather makes

    def window_rows(self, rows: torch.Tensor) -> torch.Tensor:
        n, c, h, w = self.shape
        ref = torch.div(rows, w, rounding_mode="floor")
        stored = self.arrays[0][ref] * w + (rows - ref * w)  # the same columns in the store's row numbering
        if isinstance(self.whole, CodedStage):
            return self.whole.window_rows(stored)
        return torch.index_select(self.whole.reshape(-1, c * h), 0, stored)



# ------------------------------------------------------------------------------------------------ store kinds


@dataclass(frozen=True)
class StoreKind:
    """How a reference database keeps its maps: the rules the layout, the writer and the reader ask for."""

    name: str
    feature_bits: tuple[int, int, int, int] | None  # bits per feature value of stages 1-4; None: float16 values
    coded_attention: bool  # masks and gates as 8-bit codes (gates with a low, step pair); False: float16 values
    jpeg_thumbnails: bool  # thumbnails as JPEGs one after another; False: a uint8 array
    summary: str  # what it is, in a few words (``build_db --store``'s help)

    def bits(self, stage: int) -> int | None:
        """Bits per feature value of ``stage`` (1-based); None: float16."""
        return None if self.feature_bits is None else self.feature_bits[stage - 1]

    @property
    def float16_maps(self) -> bool:
        """It holds the network's maps as float16 values, all of them: what a build of the default store writes, so
        its rows can stand in for encoding the same tiles again."""
        return self.feature_bits is None and not self.coded_attention

    @property
    def attention_dtype(self) -> str:
        """The dtype of the stored masks and gates."""
        return "uint8" if self.coded_attention else "float16"

    # ---------------------------------------------------------------------------------------------- writing
    def encode_stage(self, cols: torch.Tensor, stage: int) -> tuple[dict[str, np.ndarray], torch.Tensor]:
        """The stored arrays of one stage's column-major features ``cols`` (N x W x C x H float16), by name, and
        the float16 values they decode to."""
        bits = self.bits(stage)
        if bits is None:
            return {f"features_{stage}": cols.numpy()}, cols
        codes, step = encode_features(cols, bits)
        return ({f"features_{stage}": codes.numpy(), f"feature_scale_{stage}": step.numpy()},
                decode_features(codes, step, bits))

    def encode_masks(self, masks: torch.Tensor, float_dtype: torch.dtype = torch.float16) -> np.ndarray:
        """The stored attention masks (``float_dtype`` where they are not coded)."""
        return (encode_masks(masks) if self.coded_attention else masks.to(float_dtype)).numpy()

    def encode_gates(self, gates: torch.Tensor, stage: int, float_dtype: torch.dtype = torch.float16
                     ) -> tuple[dict[str, np.ndarray], torch.Tensor]:
        """The stored arrays of one stage's CA column gates (N x C x W), by name, and the values they decode to
        (``float_dtype`` where they are not coded)."""
        if not self.coded_attention:
            stored = gates.to(float_dtype)
            return {f"gates_{stage}": stored.numpy()}, stored
        codes, scale = encode_gates(gates)
        return {f"gates_{stage}": codes.numpy(), f"gate_scale_{stage}": scale.numpy()}, decode_gates(codes, scale)

    def describe(self, use_ca: bool) -> dict[str, str | None]:
        """The metadata's words for its feature, mask, gate and thumbnail arrays."""
        attention = "uint8 codes" if self.coded_attention else "float16"
        features = ("features_<b>.npy: float16, R x W_b x C_b x H_b (column-major per reference; StageMaps view = "
                    "permute(0, 2, 3, 1))" if self.feature_bits is None else
                    f"features_<b>.npy: uint8 codes of {list(self.feature_bits)} bits (stages 1-4), R x W_b x "
                    "C_b*H_b*bits/8 (each column packed), feature_scale_<b>.npy float16 R x C_b steps; see "
                    "geoapp.retrieval.codes")
        return {
            "features": features,
            "masks": f"masks_<b>.npy: {attention}, R x H_b x W_b" if use_ca else None,
            "gates": f"gates_<b>.npy: {attention}, R x C_b x W_b (the stages that choose windows)" if use_ca else None,
            "thumbnails": (f"{THUMBNAIL_JPEG_NAME}: JPEGs, {THUMBNAIL_OFFSETS}.npy: int64 R + 1 offsets"
                           if self.jpeg_thumbnails else "thumbnails.npy: uint8 R x 96 x 96 x 3"),
        }

    # ---------------------------------------------------------------------------------------------- reading
    def stage_features(self, stored: torch.Tensor, scale: torch.Tensor | None, stage: int):
        """One stage's stored features (N x W x ...) as N x C x H x W float16 maps: a view of float16 values, or a
        :class:`CodedStage` decoded where a search reads it."""
        bits = self.bits(stage)
        return stored.permute(0, 2, 3, 1) if bits is None else CodedStage(stored, scale, bits)

    def read_masks(self, stored: torch.Tensor):
        return deferred_masks(stored) if self.coded_attention else stored

    def read_gates(self, stored: torch.Tensor, scale) -> torch.Tensor:
        return decode_gates(stored, scale) if self.coded_attention else stored

    def decoded_rows(self, name: str, arrays: dict):
        """A stored attention array ``name`` (``gates_<b>`` or ``masks_<b>``) read as its float16 values."""
        array = arrays[name]
        if not self.coded_attention:
            return array
        if name.startswith("gates_"):
            return DecodedRows(decode_gates, (array, arrays[f"gate_scale_{name[len('gates_'):]}"]), array.shape)
        return DecodedRows(decode_masks, (array,), array.shape)


STORES: dict[str, StoreKind] = {kind.name: kind for kind in (
    StoreKind("fp16", None, False, False, "float16 maps (the fastest search)"),
    StoreKind("int8", (8, 8, 8, 8), True, True, "8-bit codes, JPEG thumbnails"),
    StoreKind("int4", (4, 4, 4, 4), True, True, "4-bit codes, JPEG thumbnails"),
    # the size lever: about a fifth of fp16 at a small loss of R@1 (docs/results.md, "How small can a reference be")
    StoreKind("compact", (2, 2, 2, 4), True, True, "2-bit codes for blocks 1-3, 4-bit for block 4, JPEG thumbnails"),
)}
STORE_KINDS = tuple(STORES)  # the names, as --store offers them
FP16 = STORES["fp16"]
# what build_db writes unless told: fp16, the fastest search; compact's window columns are decoded on every query,
# so the smaller store is one to ask for (docs/results.md has both stores' sizes, R@1 and search times)
DEFAULT_STORE = FP16


def store_kind(store: str | StoreKind) -> StoreKind:
    """The store kind named ``store`` (a kind is returned as it is); an unknown name is an error that lists the
    known ones."""
    if isinstance(store, StoreKind):
        return store
    if store not in STORES:
        raise ValueError(f"store must be one of {STORE_KINDS}, got {store!r}")
    return STORES[store]

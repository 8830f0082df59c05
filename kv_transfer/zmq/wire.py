"""What a prefill engine pushes to a decode engine's KV socket: typed frames, no pickle.

One transfer is one prefill request's prompt KV, named by the gateway's `transfer_id`. Its frames
come in order on one PUSH socket: a `LayerBlocks` header (plus one data frame) per layer and step,
then `Done`. `Drop` tells a decode engine to forget a transfer (its prefill was aborted, or its
decode will never run). Every field is bounded before anything is allocated for it.
"""

from __future__ import annotations

import msgspec

MAX_ID_LEN = 256
MAX_LAYER_NAME_LEN = 256
MAX_LAYERS = 1024
# dtype name -> bytes per element; only these cross the wire.
DTYPES = {"float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1, "uint8": 1}


class LayerBlocks(msgspec.Struct, tag="layer", frozen=True, array_like=True):
    """Blocks `first` .. `first + shape[0]` (positions in the request's block list) of one layer;
    the data frame that follows is the C-contiguous array of `shape` and `dtype`."""

    transfer_id: str
    layer: str
    first: int
    dtype: str
    shape: list[int]


class Done(msgspec.Struct, tag="done", frozen=True, array_like=True):
    """Every block of the transfer was sent: `num_tokens` prompt tokens, these layers."""

    transfer_id: str
    num_tokens: int
    layers: list[str]


class Drop(msgspec.Struct, tag="drop", frozen=True, array_like=True):
    transfer_id: str


Frame = LayerBlocks | Done | Drop
encoder = msgspec.msgpack.Encoder()
decoder = msgspec.msgpack.Decoder(Frame)


class BadFrame(ValueError):
    pass


def check(frame: Frame, data_len: int | None) -> None:
    """Refuse a frame whose fields are out of bounds or whose data does not match its header."""
    if not 0 < len(frame.transfer_id) <= MAX_ID_LEN:
        raise BadFrame("transfer_id length")
    if isinstance(frame, LayerBlocks):
        if not 0 < len(frame.layer) <= MAX_LAYER_NAME_LEN or frame.first < 0 or frame.dtype not in DTYPES:
            raise BadFrame(f"layer header {frame.layer[:40]!r} {frame.dtype[:20]!r}")
        if not 1 <= len(frame.shape) <= 8 or any(d <= 0 for d in frame.shape):
            raise BadFrame(f"shape {frame.shape[:8]}")
        size = DTYPES[frame.dtype]
        for d in frame.shape:
            size *= d
        if data_len != size:
            raise BadFrame(f"data frame of {data_len} bytes for {frame.shape} {frame.dtype}")
    elif isinstance(frame, Done):
        if frame.num_tokens <= 0 or not 0 < len(frame.layers) <= MAX_LAYERS:
            raise BadFrame("done: num_tokens or layers")
        if any(not 0 < len(name) <= MAX_LAYER_NAME_LEN for name in frame.layers):
            raise BadFrame("done: layer name length")

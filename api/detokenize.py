"""Incremental detokenization and stop strings.

`TextStream` wraps `tokenizers.decoders.DecodeStream` (it holds back partial UTF-8 sequences).
`StopMatcher` holds back just enough text to never emit the beginning of a stop string that
may complete in the next chunk.
"""

from __future__ import annotations

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream


class TextStream:
    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self.stream = DecodeStream(skip_special_tokens=True)

    def step(self, token_ids: list[int]) -> str:
        out = []
        for tid in token_ids:
            chunk = self.stream.step(self.tokenizer, tid)
            if chunk:
                out.append(chunk)
        return "".join(out)


class StopMatcher:
    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.holdback = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text safe to emit now; sets `stopped` when a stop string appeared (not emitted)."""
        if self.stopped:
            return ""
        if not self.stops:
            return text
        self.buffer += text
        hits = [i for i in (self.buffer.find(s) for s in self.stops) if i >= 0]
        if hits:
            self.stopped = True
            out, self.buffer = self.buffer[: min(hits)], ""
            return out
        cut = max(0, len(self.buffer) - self.holdback)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return out

    def flush(self) -> str:
        out, self.buffer = ("" if self.stopped else self.buffer), ""
        return out

"""Token log-probabilities in OpenAI's shapes.

Chat: `{"content": [{"token", "logprob", "bytes", "top_logprobs": [...]}], "refusal": null}`.
Completions: `{"tokens", "token_logprobs", "top_logprobs", "text_offset"}`, where each
`top_logprobs` entry maps the `logprobs` most likely tokens, and the sampled one, to their
log-probabilities (OpenAI: "up to logprobs+1 elements").

Entries correspond one to one with the generated token ids, in order, reasoning tokens and the
think markers included (as vLLM returns them): an RL trainer gets the behaviour policy's
log-probability of exactly the tokens served. The values are the model's own distribution
(vLLM's `raw_logprobs`), before temperature, top-k or top-p.
"""

from __future__ import annotations

from typing import Any

from tokenizers import Tokenizer

from splitmind.protocol import TokenLogprob


def _byte_decoder() -> dict[str, int]:
    """GPT-2's printable-character alphabet for bytes, inverted (byte-level BPE vocabularies)."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    chars, extra = list(printable), 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}


_BYTE_DECODER = _byte_decoder()


class TokenText:
    """Token id -> (the token's text, its UTF-8 bytes), as logprobs name tokens; cached per id.

    A token that is part of a multi-byte character has bytes that are not UTF-8 on their own:
    its `bytes` are exact and its text shows the replacement character, as OpenAI's do."""

    def __init__(self, tokenizer: Tokenizer) -> None:
        self.tokenizer = tokenizer
        self._cache: dict[int, tuple[str, list[int]]] = {}

    def __call__(self, token_id: int) -> tuple[str, list[int]]:
        hit = self._cache.get(token_id)
        if hit is None:
            hit = self._cache[token_id] = self._lookup(token_id)
        return hit

    def _lookup(self, token_id: int) -> tuple[str, list[int]]:
        piece = self.tokenizer.id_to_token(token_id)
        if piece is not None and all(ch in _BYTE_DECODER for ch in piece) and not self._is_added(token_id):
            raw = bytes(_BYTE_DECODER[ch] for ch in piece)
        else:
            raw = self.tokenizer.decode([token_id], skip_special_tokens=False).encode()
        return raw.decode("utf-8", errors="replace"), list(raw)

    def _is_added(self, token_id: int) -> bool:
        return token_id in self.tokenizer.get_added_tokens_decoder()


def chat_logprobs(entries: list[TokenLogprob], text: TokenText) -> dict[str, Any]:
    content = []
    for e in entries:
        token, raw = text(e.token_id)
        top = []
        for tid, lp in zip(e.top_ids, e.top_logprobs, strict=True):
            t, b = text(tid)
            top.append({"token": t, "logprob": lp, "bytes": b})
        content.append({"token": token, "logprob": e.logprob, "bytes": raw, "top_logprobs": top})
    return {"content": content, "refusal": None}


def completion_logprobs(entries: list[TokenLogprob], text: TokenText, text_offset: int) -> tuple[dict[str, Any], int]:
    """`text_offset` is where the first of these tokens starts in the choice's text; returns the
    object and where the next token starts."""
    tokens, token_logprobs, top_logprobs, offsets = [], [], [], []
    for e in entries:
        token = text(e.token_id)[0]
        top = {text(tid)[0]: lp for tid, lp in zip(e.top_ids, e.top_logprobs, strict=True)}
        top.setdefault(token, e.logprob)
        tokens.append(token)
        token_logprobs.append(e.logprob)
        top_logprobs.append(top)
        offsets.append(text_offset)
        text_offset += len(token)
    body = {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": top_logprobs, "text_offset": offsets}
    return body, text_offset

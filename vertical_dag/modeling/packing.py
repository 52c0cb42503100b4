"""Packing of token sequences into fixed blocks, without dropped tails or cross-document attention.

Two layouts share one `Packed` format and so one training loop:
- `pack` (pretraining): every document, followed by EOS, is laid end to end in one stream cut into blocks
  of `block_size`; a document may continue into the next block. The last block keeps the tail, padded.
- `pack_whole` (fine-tuning): each example (a chat with its response-only targets) stays whole in one
  block, placed first fit, since a response cut from its prompt teaches nothing.
Position ids restart at 0 where a document (or a block, or the padding) starts; transformers turns such
position ids into a block-diagonal causal mask (SDPA/eager) or varlen flash-attention when no attention mask
is passed, so no token attends to, or is scored from, another document. Padding is never a target.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

IGNORE = -100
PAD_SOURCE, DOMAIN_SOURCE, GENERAL_SOURCE = 0, 1, 2


@dataclass
class Packed:
    """Blocks of tokens ready for a causal LM. All arrays are [n_blocks, block_size]."""

    input_ids: np.ndarray  # int32
    position_ids: np.ndarray  # int32, 0 at every document / block start
    source: np.ndarray  # uint8: PAD_SOURCE, DOMAIN_SOURCE or GENERAL_SOURCE per token
    documents: int
    target: np.ndarray | None = None  # bool, True where a token is a training target; None: every real token

    @property
    def block_size(self) -> int:
        return int(self.input_ids.shape[1])

    def __len__(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def real_tokens(self) -> int:
        return int((self.source != PAD_SOURCE).sum())

    @property
    def efficiency(self) -> float:
        """Share of non-padding tokens over all block slots."""
        return self.real_tokens / max(1, self.input_ids.size)

    def tokens_of(self, source: int, rows: np.ndarray | None = None) -> int:
        src = self.source if rows is None else self.source[rows]
        return int((src == source).sum())

    def labels(self, rows: np.ndarray | slice) -> np.ndarray:
        """Labels for causal LM: padding, non-target tokens and every segment's first token (no in-document
        context) are ignored."""
        ids = self.input_ids[rows].astype(np.int64)
        ignore = (self.source[rows] == PAD_SOURCE) | (self.position_ids[rows] == 0)
        if self.target is not None:
            ignore |= ~self.target[rows]
        ids[ignore] = IGNORE
        return ids

    def fingerprint(self) -> str:
        h = hashlib.sha256()
        for a in (self.input_ids, self.position_ids, self.source, self.target):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        return h.hexdigest()[:16]

    def save(self, path: Any) -> None:
        extra = {} if self.target is None else {"target": self.target}
        np.savez(path, input_ids=self.input_ids, position_ids=self.position_ids, source=self.source,
                 documents=np.array([self.documents]), **extra)

    @classmethod
    def load(cls, path: Any) -> Packed:
        with np.load(path, allow_pickle=False) as z:
            target = z["target"] if "target" in z.files else None
            return cls(z["input_ids"], z["position_ids"], z["source"], int(z["documents"][0]), target)


def tokenize(tokenizer: Any, texts: Sequence[str], batch: int = 512) -> list[np.ndarray]:
    """Token ids per text (no special tokens added), with the fast tokenizer's batch encoder."""
    out: list[np.ndarray] = []
    for i in range(0, len(texts), batch):
        enc = tokenizer(list(texts[i : i + batch]), add_special_tokens=False, return_attention_mask=False)["input_ids"]
        out.extend(np.asarray(ids, dtype=np.int32) for ids in enc)
    return out


def pack(docs: Sequence[np.ndarray], block_size: int, eos_id: int, pad_id: int,
         sources: Sequence[int] | np.ndarray | None = None) -> Packed:
    """Pack token arrays (one per document) into blocks; each document ends with EOS; the tail is kept, padded."""
    if block_size < 2:
        raise ValueError("block_size must be at least 2")
    docs = [d for d in docs if len(d)]
    if sources is None:
        sources = np.full(len(docs), DOMAIN_SOURCE, dtype=np.uint8)
    lengths = np.fromiter((len(d) + 1 for d in docs), dtype=np.int64, count=len(docs))
    total = int(lengths.sum())
    n_blocks = max(1, -(-total // block_size))
    size = n_blocks * block_size
    stream = np.full(size, pad_id, dtype=np.int32)
    src = np.zeros(size, dtype=np.uint8)
    if docs:
        body = np.concatenate([np.append(d, eos_id).astype(np.int32) for d in docs])
        stream[:total] = body
        src[:total] = np.repeat(np.asarray(sources, dtype=np.uint8)[: len(docs)], lengths)
    # A segment starts at each document start, each block start, and where the padding starts.
    starts = np.zeros(size, dtype=bool)
    starts[np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)] = True
    starts[::block_size] = True
    if total < size:
        starts[total] = True
    idx = np.arange(size, dtype=np.int64)
    seg_start = np.maximum.accumulate(np.where(starts, idx, 0))
    positions = (idx - seg_start).astype(np.int32)
    shape = (n_blocks, block_size)
    return Packed(stream.reshape(shape), positions.reshape(shape), src.reshape(shape), documents=len(docs))


def _first_fit(lengths: Sequence[int], block_size: int, packing: bool) -> list[list[int]]:
    """Example indices per block: each example goes into the first block with room (a new one if none)."""
    blocks: list[list[int]] = []
    room: list[int] = []
    for i, n in enumerate(lengths):
        at = next((b for b, r in enumerate(room) if r >= n), None) if packing else None
        if at is None:
            blocks.append([])
            room.append(block_size)
            at = len(blocks) - 1
        blocks[at].append(i)
        room[at] -= n
    return blocks


def pack_whole(examples: Sequence[tuple[Sequence[int], Sequence[int]]], block_size: int, pad_id: int,
               packing: bool = True) -> Packed:
    """Pack (input_ids, labels) examples whole into blocks, first fit; labels are ids on targets, IGNORE elsewhere.

    Examples keep their order inside a block; with packing off every example gets a block of its own.
    An example longer than block_size is an error: callers drop and count those first.
    """
    too_long = [i for i, (ids, _) in enumerate(examples) if len(ids) > block_size]
    if too_long:
        raise ValueError(f"{len(too_long)} example(s) longer than block_size {block_size} (first: #{too_long[0]})")
    examples = [e for e in examples if len(e[0])]
    layout = _first_fit([len(ids) for ids, _ in examples], block_size, packing)
    shape = (max(1, len(layout)), block_size)
    ids_out = np.full(shape, pad_id, dtype=np.int32)
    pos_out = np.zeros(shape, dtype=np.int32)
    src_out = np.full(shape, PAD_SOURCE, dtype=np.uint8)
    tgt_out = np.zeros(shape, dtype=bool)
    for b, members in enumerate(layout):
        at = 0
        for i in members:
            ids, labels = examples[i]
            n = len(ids)
            ids_out[b, at:at + n] = ids
            pos_out[b, at:at + n] = np.arange(n)
            src_out[b, at:at + n] = DOMAIN_SOURCE
            tgt_out[b, at:at + n] = np.asarray(labels) != IGNORE
            at += n
        pos_out[b, at:] = np.arange(block_size - at)  # the padding is a segment of its own
    return Packed(ids_out, pos_out, src_out, documents=len(examples), target=tgt_out)


def fertility(tokenizer: Any, texts: Sequence[str], max_chars: int = 200_000) -> float | None:
    """Tokens per character over (a prefix of) `texts`: how expensive this text is for the tokenizer."""
    sample, chars = [], 0
    for t in texts:
        if chars >= max_chars:
            break
        sample.append(t)
        chars += len(t)
    if not chars:
        return None
    tokens = sum(len(x) for x in tokenize(tokenizer, sample))
    return round(tokens / chars, 4)


def cross_document_attention_blocked(model: Any, eos_id: int) -> bool:
    """Check empirically that packed position ids isolate documents for this model: the logits of a second
    document must not change when the first document's tokens change."""
    import torch

    vocab = int(model.config.vocab_size)
    g = torch.Generator().manual_seed(0)
    doc_a = torch.randint(3, vocab, (5,), generator=g)
    doc_a2 = torch.randint(3, vocab, (5,), generator=g)
    doc_b = torch.randint(3, vocab, (6,), generator=g)
    eos = torch.tensor([eos_id])
    pos = torch.tensor([list(range(6)) + list(range(6))])
    with torch.no_grad():
        was_training = model.training
        model.eval()
        outs = []
        for a in (doc_a, doc_a2):
            ids = torch.cat([a, eos, doc_b]).unsqueeze(0)
            outs.append(model(input_ids=ids.to(model.device), position_ids=pos.to(model.device), use_cache=False).logits[0, 6:].float())
        model.train(was_training)
    return bool(torch.allclose(outs[0], outs[1], atol=1e-4, rtol=1e-3))

"""Stage B torsion backbone from a pretrained ``transformers`` checkpoint (RNA-TorsionBERT).

``model.torsion_backbone=torsionbert`` replaces :class:`rna_predict.model.torsion_encoder.TorsionEncoder`
by :class:`TorsionBertEncoder`, which has the same interface
(``forward(batch) -> (sincos [B, L, 7, 2], hidden [B, L, c_token])``), so the Pairformer,
NeRF, merger and diffusion module are unchanged.

RNA-TorsionBERT (Bernard et al. 2024, Bioinformatics, "RNA-TorsionBERT: leveraging
language models for RNA 3D torsion angles prediction"; hub id ``sayby/rna_torsionbert``)
is DNABERT-3 (Ji et al. 2021) fine-tuned to predict torsions. Its conventions, taken
from the model card and the authors' inference helper (``EvryRNA/RNA-TorsionBERT``,
``rna_torsionBERT_helper.py``), are followed here:

- Input: the overlapping k-mers ``seq[j:j+k]`` (j = 0 .. n-k) of the sequence with U
  written as T, one token each, between ``[CLS]`` and ``[SEP]``. k and the token ids are
  read from the checkpoint's own tokenizer (:func:`kmer_table`): every ACGT k-mer must be
  one vocabulary token.
- Token -> residue: the helper labels token j with residue j (``index = sequence[:-2]``
  for k = 3), i.e. a k-mer predicts the torsions of its FIRST nucleotide
  (:data:`TOKEN_ANCHOR` = 0). The last k-1 residues of a chain have no k-mer of their own
  and take the last k-mer's prediction (that k-mer contains them); a chain shorter than k
  is one ``[UNK]`` token.
- Output: the public model's head (``regressor`` + ``tanh`` on DNABERT's last hidden
  state, 18 channels) gives, for angle a in the order alpha, beta, gamma, delta, epsilon,
  zeta, chi, eta, theta, ``cos`` in channel 2a and ``sin`` in channel 2a+1 (the helper
  takes ``sin = out[..., 1::2]``, ``cos = out[..., 0::2]``). The first seven angles are
  ours (``atom_layout.TORSIONS``); each (sin, cos) pair is projected onto the unit circle.

A checkpoint without such a head (any BERT-like ``AutoModel`` whose output has
``last_hidden_state``, e.g. DNABERT itself) gets a new trained linear head from the hidden
state to 7 x 2. Either way a new linear layer maps the hidden state to ``c_token`` for the
merger. Chains are tokenised separately (no k-mer spans two chains or a crop edge); a
chain with more k-mers than the checkpoint's position table holds is split into
consecutive windows of at most ``max_position_embeddings - 2`` tokens.

Loading goes through ``AutoTokenizer`` / ``AutoModel``. The public checkpoint's model
class (``RNATorsionBERTModel``, referenced by ``auto_map`` in its ``config.json``) is
Python code stored on the hub, not part of ``transformers``, so it loads only with
``trust_remote_code=True``; that flag is passed only when ``model.trust_remote_code`` is
set (default off), and a checkpoint that needs it fails with an error saying so.
"""

from __future__ import annotations

import itertools
import logging

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from rna_predict.config import ModelConfig
from rna_predict.data.atom_layout import BASES, TORSIONS

log = logging.getLogger(__name__)

N_TORSIONS = len(TORSIONS)
#: the residue a k-mer token predicts, as an offset inside the k-mer (0: its first nucleotide)
TOKEN_ANCHOR = 0
#: the checkpoint's letters for our base indices (``atom_layout.BASES``; U written as T)
TOKEN_LETTERS = tuple("T" if b == "U" else b for b in BASES)


class TorsionBertError(ValueError):
    """The TorsionBERT checkpoint cannot be loaded or does not fit (names path and reason)."""


def load_checkpoint(path: str, trust_remote_code: bool = False):
    """``(tokenizer, model)`` from ``path`` (local directory or hub id) via ``AutoTokenizer``
    and ``AutoModel``; remote code runs only with ``trust_remote_code=True``."""
    if not path:
        raise TorsionBertError("model.torsionbert_path is empty; set it to a checkpoint "
                               "directory or hub id (model.torsion_backbone=torsionbert)")
    from transformers import AutoModel, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(trust_remote_code))
        model = AutoModel.from_pretrained(path, trust_remote_code=bool(trust_remote_code))
    except (OSError, ValueError, ImportError) as exc:
        msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = ""
        if "trust_remote_code" in str(exc) and not trust_remote_code:
            hint = (" (the checkpoint ships its own model code; set model.trust_remote_code=true"
                    " only if you trust the code in it)")
        raise TorsionBertError(f"model.torsionbert_path={path}: cannot load: {msg}{hint}") from None
    return tokenizer, model


def kmer_table(tokenizer, source: str = "checkpoint") -> tuple[int, Tensor]:
    """``(k, table)``: ``table[sum_p b_p 4^(k-1-p)]`` is the token id of the k-mer of base
    indices ``b_0..b_{k-1}`` (``atom_layout.BASES`` order, U as T), from the tokenizer.

    k is the length of the vocabulary's ACGT-only tokens; every one of the 4^k k-mers must
    encode to exactly one known token.
    """
    letters = set("ACGT")
    lengths = {len(t) for t in tokenizer.get_vocab() if t and set(t) <= letters}
    if len(lengths) != 1:
        raise TorsionBertError(f"{source}: tokenizer vocabulary is not one k-mer size "
                               f"(ACGT token lengths {sorted(lengths)})")
    k = lengths.pop()
    ids = []
    for letters_k in itertools.product(TOKEN_LETTERS, repeat=k):
        kmer = "".join(letters_k)
        enc = tokenizer(kmer, add_special_tokens=False)["input_ids"]
        if len(enc) != 1 or enc[0] == tokenizer.unk_token_id:
            raise TorsionBertError(f"{source}: tokenizer does not map the {k}-mer {kmer!r} to one token "
                                   f"(got {enc})")
        ids.append(int(enc[0]))
    return k, torch.tensor(ids, dtype=torch.long)


def chain_segments(mask: Tensor, chain_index: Tensor) -> list[list[tuple[int, int]]]:
    """Per batch element, ``[(start, end), ...]`` runs of real residues of one chain."""
    out = []
    for m, c in zip(mask.tolist(), chain_index.tolist()):
        runs: list[tuple[int, int]] = []
        start = None
        for i, (ok, ch) in enumerate(zip(m, c)):
            if start is not None and (not ok or ch != c[start]):
                runs.append((start, i))
                start = None
            if ok and start is None:
                start = i
        if start is not None:
            runs.append((start, len(m)))
        out.append(runs)
    return out


class TorsionBertEncoder(nn.Module):
    """Stage B torsion branch on a pretrained checkpoint (see the module docstring).

    Submodules: ``bert`` (the pretrained encoder), ``regressor`` (the checkpoint's torsion
    head, or None), ``head`` (new 7 x 2 head when the checkpoint has none), ``proj``
    (hidden -> ``c_token``). :attr:`pretrained_prefixes` names the pretrained ones.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        path = cfg.torsionbert_path
        tokenizer, hf = load_checkpoint(path, cfg.trust_remote_code)
        self.k, table = kmer_table(tokenizer, f"model.torsionbert_path={path}")
        self.register_buffer("kmer_ids", table, persistent=False)
        self.cls_id, self.sep_id = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
        self.pad_id, self.unk_id = int(tokenizer.pad_token_id or 0), int(tokenizer.unk_token_id)
        if hasattr(hf, "dnabert") and hasattr(hf, "regressor"):  # RNA-TorsionBERT layout
            self.bert = hf.dnabert
            self.regressor = hf.regressor
            self.activation = getattr(hf, "activation", None) or nn.Identity()
            n_out = [m for m in self.regressor.modules() if isinstance(m, nn.Linear)][-1].out_features
            if n_out < 2 * N_TORSIONS:
                raise TorsionBertError(f"model.torsionbert_path={path}: torsion head has {n_out} "
                                       f"outputs, fewer than sin/cos of {N_TORSIONS} torsions")
            self.head = None
            self.pretrained_prefixes: tuple[str, ...] = ("bert", "regressor")
        else:
            self.bert = hf
            self.regressor = None
            self.head = nn.Linear(hf.config.hidden_size, N_TORSIONS * 2)
            self.pretrained_prefixes = ("bert",)
        if getattr(self.bert, "pooler", None) is not None:
            self.bert.pooler = None  # [CLS] pooling is unused; unused weights would stall DDP
        hidden = int(self.bert.config.hidden_size)
        self.max_tokens = int(self.bert.config.max_position_embeddings) - 2
        self.proj = nn.Linear(hidden, cfg.c_token)
        log.info("torsionbert: %s, %d-mer tokens, hidden %d, %s head", path, self.k, hidden,
                 "pretrained" if self.regressor is not None else "new")

    # ----------------------------------------------------------- tokenisation
    def tokenize(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """BERT rows for ``batch`` and where each residue reads its token.

        Returns ``input_ids`` [R, T], ``attention_mask`` [R, T], and ``(row, col)`` [B, L]
        long: residue (b, l) takes the hidden state ``[row, col]`` (-1 for padding).
        """
        base = batch["base_type"].detach().cpu().clamp(0, len(BASES) - 1)
        mask = batch["residue_mask"].detach().cpu().bool()
        b_size, length = base.shape
        row_of = torch.full((b_size, length), -1, dtype=torch.long)
        col_of = torch.full((b_size, length), -1, dtype=torch.long)
        powers = len(BASES) ** torch.arange(self.k - 1, -1, -1)
        table = self.kmer_ids.cpu()
        rows: list[list[int]] = []
        for b, runs in enumerate(chain_segments(mask, batch["chain_index"].detach().cpu())):
            for start, end in runs:
                n = end - start
                if n >= self.k:
                    windows = base[b, start:end].unfold(0, self.k, 1)  # [n - k + 1, k]
                    tokens = table[(windows * powers).sum(-1)].tolist()
                else:
                    tokens = [self.unk_id]
                first_row = len(rows)
                for c0 in range(0, len(tokens), self.max_tokens):
                    rows.append([self.cls_id, *tokens[c0:c0 + self.max_tokens], self.sep_id])
                # residue i reads token j = i - TOKEN_ANCHOR, clipped to the chain's tokens
                j = (torch.arange(n) - TOKEN_ANCHOR).clamp(0, len(tokens) - 1)
                row_of[b, start:end] = first_row + j // self.max_tokens
                col_of[b, start:end] = 1 + j % self.max_tokens
        width = max((len(r) for r in rows), default=2)
        ids = torch.full((max(len(rows), 1), width), self.pad_id, dtype=torch.long)
        attn = torch.zeros_like(ids)
        for r, toks in enumerate(rows):
            ids[r, :len(toks)] = torch.tensor(toks)
            attn[r, :len(toks)] = 1
        return ids, attn, row_of, col_of

    def residue_hidden(self, batch: dict[str, Tensor]) -> Tensor:
        """The checkpoint's last hidden state of each residue's token, [B, L, hidden] (0 on padding)."""
        device = batch["base_type"].device
        ids, attn, row_of, col_of = self.tokenize(batch)
        tok = self.bert(input_ids=ids.to(device), attention_mask=attn.to(device)).last_hidden_state
        valid = (row_of >= 0).to(device)
        out = tok[row_of.clamp(min=0).to(device), col_of.clamp(min=0).to(device)]
        return out * valid[..., None].to(out.dtype)

    def forward(self, batch: dict[str, Tensor]) -> tuple[Tensor, Tensor]:
        mask = batch["residue_mask"]
        h = self.residue_hidden(batch)
        if self.regressor is not None:
            out = self.activation(self.regressor(h))
            raw = torch.stack([out[..., 1:2 * N_TORSIONS:2], out[..., 0:2 * N_TORSIONS:2]], dim=-1)
        else:
            raw = self.head(h).unflatten(-1, (N_TORSIONS, 2))
        raw = torch.where(mask[..., None, None], raw, torch.tensor([0.0, 1.0], device=raw.device, dtype=raw.dtype))
        sincos = F.normalize(raw, dim=-1, eps=1e-6)
        hidden = self.proj(h) * mask[..., None].to(h.dtype)
        return sincos, hidden


__all__ = [
    "TOKEN_ANCHOR",
    "TorsionBertEncoder",
    "TorsionBertError",
    "chain_segments",
    "kmer_table",
    "load_checkpoint",
]

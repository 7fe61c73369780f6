"""Tiny BERT checkpoints written with ``transformers`` for the TorsionBERT / LoRA tests.

No network: every checkpoint is built in memory, saved with ``save_pretrained`` to a
directory and read back by the code under test through ``AutoTokenizer`` / ``AutoModel``,
the path the public ``sayby/rna_torsionbert`` checkpoint takes.

- :func:`write_bert`: a small randomly initialised ``BertModel`` over DNABERT's 3-mer
  vocabulary (``[PAD] [UNK] [CLS] [SEP] [MASK]`` + the 64 ACGT 3-mers), no torsion head.
- :func:`write_probe`: a zero-layer BERT whose hidden state is LayerNorm(10 e_id) (position
  and segment embeddings zero), so ``argmax`` of a token's hidden state is its token id.
- :func:`write_remote_code`: the public checkpoint's layout (``dnabert`` encoder +
  ``regressor`` head + ``tanh``, 18 outputs) as a custom model class referenced by
  ``auto_map``; it loads only with ``trust_remote_code=True``.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import torch

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
KMERS = ["".join(p) for p in itertools.product("ACGT", repeat=3)]
VOCAB = SPECIALS + KMERS


def write_tokenizer(out: Path) -> None:
    from transformers import BertTokenizer

    out.mkdir(parents=True, exist_ok=True)
    vocab = out / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    BertTokenizer(str(vocab), do_lower_case=False).save_pretrained(str(out))


def bert_config(**kw):
    from transformers import BertConfig

    args = dict(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, max_position_embeddings=66, pad_token_id=0)
    args.update(kw)
    return BertConfig(**args)


def write_bert(out: Path, seed: int = 0, **kw) -> Path:
    from transformers import BertModel

    torch.manual_seed(seed)
    BertModel(bert_config(**kw)).save_pretrained(str(out))
    write_tokenizer(out)
    return out


def write_probe(out: Path) -> Path:
    from transformers import BertModel

    hidden = len(VOCAB) + 3
    model = BertModel(bert_config(hidden_size=hidden, num_hidden_layers=0, num_attention_heads=1))
    with torch.no_grad():
        emb = model.embeddings
        emb.word_embeddings.weight.zero_()
        emb.word_embeddings.weight[:, : len(VOCAB)] = 10.0 * torch.eye(len(VOCAB))
        emb.position_embeddings.weight.zero_()
        emb.token_type_embeddings.weight.zero_()
    model.save_pretrained(str(out))
    write_tokenizer(out)
    return out


_CONFIG_PY = '''
from transformers import PretrainedConfig


class TinyTorsionBertConfig(PretrainedConfig):
    model_type = "tiny_torsionbert"

    def __init__(self, bert=None, num_classes=18, **kwargs):
        super().__init__(**kwargs)
        self.bert = dict(bert or {})
        self.num_classes = num_classes
'''

_MODEL_PY = '''
from torch import nn
from transformers import BertConfig, BertModel, PreTrainedModel

from .configuration_tiny_torsionbert import TinyTorsionBertConfig


class TinyTorsionBertModel(PreTrainedModel):
    config_class = TinyTorsionBertConfig

    def __init__(self, config):
        super().__init__(config)
        bert = BertConfig(**config.bert)
        self.dnabert = BertModel(bert, add_pooling_layer=False)
        self.regressor = nn.Sequential(nn.LayerNorm(bert.hidden_size),
                                       nn.Linear(bert.hidden_size, config.num_classes))
        self.activation = nn.Tanh()

    def forward(self, inputs):
        return {"logits": self.activation(self.regressor(self.dnabert(**inputs).last_hidden_state))}
'''


def write_remote_code(out: Path, angles_deg: list[float], amplitude: float = 0.6) -> Path:
    """Checkpoint whose head outputs, for every token, ``amplitude * (cos, sin)`` of
    ``angles_deg[a]`` in channels (2a, 2a+1) (the public model's layout)."""
    from transformers import AutoConfig, AutoModel

    out.mkdir(parents=True, exist_ok=True)
    (out / "configuration_tiny_torsionbert.py").write_text(_CONFIG_PY)
    (out / "modeling_tiny_torsionbert.py").write_text(_MODEL_PY)
    config = {
        "architectures": ["TinyTorsionBertModel"],
        "auto_map": {"AutoConfig": "configuration_tiny_torsionbert.TinyTorsionBertConfig",
                     "AutoModel": "modeling_tiny_torsionbert.TinyTorsionBertModel"},
        "model_type": "tiny_torsionbert", "bert": bert_config().to_dict(),
        "num_classes": 2 * len(angles_deg),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    torch.manual_seed(0)
    model = AutoModel.from_config(AutoConfig.from_pretrained(str(out), trust_remote_code=True),
                                  trust_remote_code=True)
    rad = torch.tensor(angles_deg, dtype=torch.float64) * torch.pi / 180
    target = torch.stack([amplitude * rad.cos(), amplitude * rad.sin()], -1).flatten()
    with torch.no_grad():
        model.regressor[1].weight.zero_()
        model.regressor[1].bias.copy_(torch.atanh(target).float())
    model.save_pretrained(str(out))
    write_tokenizer(out)
    return out

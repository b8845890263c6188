"""Writes an ONNX file from a gainrag model directory (config.json + model.safetensors), for
bench/onnx-peer.ts. No `transformers` here: the BERT / XLM-R forward is written out below in plain
torch and loaded from the same safetensors tensors gainrag reads.

  python3 bench/onnx/export.py MODEL_DIR OUT.onnx encoder|cross

encoder: inputs input_ids, attention_mask [batch, seq] int64 -> embeddings [batch, hidden]
         (mean over the attended positions, special tokens included, no normalisation)
cross:   same inputs -> logits [batch, num_labels] (XLM-R classification head on token 0)
Token type ids are all zero on both sides (gainrag's Encoder passes none; XLM-R has one type).
"""
import json
import math
import struct
import sys

import numpy as np
import torch
from torch import nn


def read_safetensors(path):
    with open(path, 'rb') as f:
        n = struct.unpack('<Q', f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == '__metadata__':
            continue
        if info['dtype'] != 'F32':
            raise SystemExit(f'{name}: only F32 tensors are handled, got {info["dtype"]}')
        a, b = info['data_offsets']
        out[name] = torch.from_numpy(np.frombuffer(data[a:b], dtype=np.float32).copy()).reshape(info['shape'])
    return out


class Layer(nn.Module):
    def __init__(self, w, p, heads, hidden, eps):
        super().__init__()
        self.hidden = hidden
        self.w = {k[len(p):]: v for k, v in w.items() if k.startswith(p)}
        self.heads = heads
        self.eps = eps
        for k, v in self.w.items():
            self.register_buffer(k.replace('.', '_'), v)

    def lin(self, x, name):
        return torch.nn.functional.linear(x, getattr(self, name + '_weight'), getattr(self, name + '_bias'))

    def norm(self, x, name):
        return torch.nn.functional.layer_norm(x, (self.hidden,), getattr(self, name + '_weight'), getattr(self, name + '_bias'), self.eps)

    def forward(self, x, bias):
        # Sizes from the config, not from x.shape, so the exported graph keeps them constant.
        b, s = x.shape[0], x.shape[1]
        h = self.hidden
        d = h // self.heads

        def split(t):
            return t.view(b, s, self.heads, d).transpose(1, 2)
        q = split(self.lin(x, 'attention_self_query'))
        k = split(self.lin(x, 'attention_self_key'))
        v = split(self.lin(x, 'attention_self_value'))
        att = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(d) + bias
        ctx = torch.matmul(att.softmax(-1), v).transpose(1, 2).reshape(b, s, h)
        x = self.norm(self.lin(ctx, 'attention_output_dense') + x, 'attention_output_LayerNorm')
        up = torch.nn.functional.gelu(self.lin(x, 'intermediate_dense'))
        return self.norm(self.lin(up, 'output_dense') + x, 'output_LayerNorm')


class Model(nn.Module):
    def __init__(self, cfg, w, head):
        super().__init__()
        self.roberta = cfg['model_type'] == 'xlm-roberta'
        p = 'roberta.' if self.roberta and any(k.startswith('roberta.') for k in w) else ('bert.' if any(k.startswith('bert.') for k in w) else '')
        self.pad = cfg.get('pad_token_id', 0)
        self.eps = cfg.get('layer_norm_eps', 1e-12)
        self.head = head
        e = p + 'embeddings.'
        self.register_buffer('word', w[e + 'word_embeddings.weight'])
        self.register_buffer('pos', w[e + 'position_embeddings.weight'])
        self.register_buffer('type0', w[e + 'token_type_embeddings.weight'][0])
        self.register_buffer('ln_w', w[e + 'LayerNorm.weight'])
        self.register_buffer('ln_b', w[e + 'LayerNorm.bias'])
        self.layers = nn.ModuleList(Layer(w, f'{p}encoder.layer.{i}.', cfg['num_attention_heads'], cfg['hidden_size'], self.eps)
                                    for i in range(cfg['num_hidden_layers']))
        if head == 'cross':
            for k in ['classifier.dense.weight', 'classifier.dense.bias', 'classifier.out_proj.weight', 'classifier.out_proj.bias']:
                self.register_buffer(k.replace('.', '_'), w[k])

    def forward(self, input_ids, attention_mask):
        mask = attention_mask.to(torch.float32)
        if self.roberta:
            # RoBERTa positions: count the non-pad tokens, offset past the pad index.
            keep = input_ids.ne(self.pad).to(torch.int64)
            positions = torch.cumsum(keep, dim=1) * keep + self.pad
        else:
            positions = torch.cumsum(torch.ones_like(input_ids), dim=1) - 1
        x = self.word[input_ids] + self.pos[positions] + self.type0
        x = torch.nn.functional.layer_norm(x, (self.ln_w.shape[0],), self.ln_w, self.ln_b, self.eps)
        bias = ((1.0 - mask) * -1e9)[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        if self.head == 'encoder':
            m = mask[:, :, None]
            return (x * m).sum(1) / m.sum(1).clamp(min=1e-9)
        c = torch.tanh(torch.nn.functional.linear(x[:, 0], self.classifier_dense_weight, self.classifier_dense_bias))
        return torch.nn.functional.linear(c, self.classifier_out_proj_weight, self.classifier_out_proj_bias)


def main():
    model_dir, out, head = sys.argv[1], sys.argv[2], sys.argv[3]
    if head not in ('encoder', 'cross'):
        raise SystemExit('head must be encoder or cross')
    with open(f'{model_dir}/config.json') as f:
        cfg = json.load(f)
    model = Model(cfg, read_safetensors(f'{model_dir}/model.safetensors'), head).eval()
    ids = torch.tensor([[2, 5, 6, 7, 3], [2, 8, 3, cfg.get('pad_token_id', 0), cfg.get('pad_token_id', 0)]], dtype=torch.int64)
    att = (ids != cfg.get('pad_token_id', 0)).to(torch.int64)
    att[:, 0] = 1
    with torch.no_grad():
        torch.onnx.export(model, (ids, att), out, input_names=['input_ids', 'attention_mask'],
                          output_names=['embeddings' if head == 'encoder' else 'logits'],
                          dynamic_axes={'input_ids': {0: 'batch', 1: 'seq'}, 'attention_mask': {0: 'batch', 1: 'seq'}},
                          opset_version=14, do_constant_folding=True)
    print(f'wrote {out} (torch {torch.__version__})')


if __name__ == '__main__':
    main()

#!/bin/bash
# GPU throughput, engine vs the reference method, same machine, same run. After gpu-check.sh.
set -u
source .device/on-device.sh >/dev/null
export GAINRAG_ADDON=$PWD/build-gpu/Release/gainrag.node
N=${N:-1000000}
timeout 100 node dist/bench/gpu-speed.js retrieval $N
python3 - $N <<'PY'
import sys, torch, torch.nn.functional as F, json
N, D, Q, K = int(sys.argv[1]), 768, 4096, 100
P = torch.randn(N, D, device="cuda", dtype=torch.float16); q = torch.randn(Q, D, device="cuda", dtype=torch.float16)
def run():
    s = q @ P.T; return s.topk(K, dim=-1)
for _ in range(2): run()
torch.cuda.synchronize(); ts=[]
for _ in range(3):
    a, b = torch.cuda.Event(True), torch.cuda.Event(True); a.record(); run(); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b)/1e3)
t = sorted(ts)[1]; print(json.dumps({"bench": "retrieval", "engine": "torch matmul+topk", "n": N, "sec": t, "qps": Q / t}))
from transformers import XLMRobertaConfig, XLMRobertaForSequenceClassification
cfg = XLMRobertaConfig(vocab_size=250002, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, max_position_embeddings=514, type_vocab_size=1, pad_token_id=1, num_labels=1)
m = XLMRobertaForSequenceClassification(cfg); m.save_pretrained("/tmp/xlmr-base")
cfg._attn_implementation = "sdpa"; m = XLMRobertaForSequenceClassification.from_pretrained("/tmp/xlmr-base", attn_implementation="sdpa").cuda().half().eval()
lens = torch.tensor([132 + (i % 140) for i in range(256)], device="cuda")  # the same lengths the engine sees, padded to the max
ids = torch.randint(5, 1500, (256, int(lens.max())), device="cuda"); am = (torch.arange(ids.shape[1], device="cuda")[None] < lens[:, None]).long()
with torch.no_grad():
    for _ in range(2): m(input_ids=ids, attention_mask=am)
    torch.cuda.synchronize(); ts=[]
    for _ in range(3):
        a, b = torch.cuda.Event(True), torch.cuda.Event(True); a.record(); m(input_ids=ids, attention_mask=am); b.record(); torch.cuda.synchronize(); ts.append(a.elapsed_time(b)/1e3)
t = sorted(ts)[1]; print(json.dumps({"bench": "cross-encoder", "engine": "HF SDPA fp16 padded", "pairs": 256, "sec": t, "pairsPerSec": 256 / t}))
PY
cp .device/shared/fixtures/xlmr-tiny-reranker/tokenizer*.json /tmp/xlmr-base/
timeout 100 node dist/bench/gpu-speed.js cross-encoder /tmp/xlmr-base

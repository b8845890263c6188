"""Markdown summary of one bench/gpu/kernels.sh run: python3 summarize.py RESULTS.jsonl > RESULTS.md.
Ratios are gainrag kernels / torch matmul+topk, both measured in that same device call."""
import json, sys

recs = []
for line in open(sys.argv[1]):
    line = line.strip()
    if line.startswith("{"):
        try:
            recs.append(json.loads(line))
        except ValueError:
            pass
meta = next((r for r in recs if r.get("section") == "meta"), {})
print(f"# gainrag CUDA kernels, {meta.get('date', '?')}, {meta.get('gpu', '?')} (bench/gpu/kernels.sh)\n")
print(f"build: {meta.get('build', '?')}\n")
checks = [r for r in recs if r.get("section") == "check"]
print("## Kernels vs the CPU fp32 path (same index, same queries)\n")
print("| case | ok | ids differ | of which near-ties | max score rel | error |")
print("|---|---|---|---|---|---|")
for r in checks:
    print(f"| {r.get('case')} | {r.get('ok')} | {r.get('ids_differ', '')} | {r.get('near_ties', '')} | "
          f"{r.get('max_score_rel', '')} | {r.get('error', '')} |")
sel = [r for r in recs if r.get("section") == "select"]
if sel:
    print("\n## SelectTile vs at::topk, same 4096 x 65536 fp32 tile (two tile passes)\n")
    print("| k' | ours s | at::topk s | ratio | values equal |")
    print("|---|---|---|---|---|")
    for r in sel:
        print(f"| {r.get('k_selected')} | {r.get('ours_sec_2tiles')} | {r.get('topk_sec_2tiles')} | {r.get('ratio')} | "
              f"{r.get('values_equal_topk')} |")
print("\n## Search, 768-d fp16 unit vectors, Q=4096 (q/s; ratio = gainrag / torch)\n")
print("| N | k | gainrag q/s | torch q/s | ratio | agreement with fp32 exact (256 queries) | ids differ / near-ties |")
print("|---|---|---|---|---|---|---|")
ours = {(r["n"], r["k"]): r for r in recs if r.get("section") == "speed" and r.get("engine") == "gainrag kernels"}
theirs = {(r["n"], r["k"]): r for r in recs if r.get("section") == "speed" and r.get("engine") == "torch matmul+topk"}
for key in sorted(set(ours) | set(theirs)):
    a, b = ours.get(key, {}), theirs.get(key, {})
    ratio = f"{a['qps'] / b['qps']:.2f}x" if a.get("qps") and b.get("qps") else "-"
    print(f"| {key[0]} | {key[1]} | {a.get('qps', '-')} | {round(b['qps']) if b.get('qps') else '-'} | {ratio} | "
          f"{a.get('agreement_fp32_exact', '-')} | {a.get('ids_differ', '-')} / {a.get('near_ties', '-')} |")
errors = [r for r in recs if r.get("ok") is False and r.get("section") != "check"]
for r in errors:
    print(f"\nerror in {r.get('section')}: {r.get('error')}")

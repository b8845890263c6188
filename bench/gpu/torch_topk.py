"""torch matmul + chunked topk, the method of ../shared/device/reference_baselines.py (section 1:
fp16 unit rows and queries, 1M-row chunks, topk per chunk, merged by topk), for several N and k,
so that gainrag's kernels are compared with it in the same device call (bench/gpu/kernels.sh).
Usage: python3 torch_topk.py OUT.jsonl N[,N...] K[,K...]"""
import json, sys, torch, torch.nn.functional as F

out = open(sys.argv[1], "a")
Ns = [int(x) for x in sys.argv[2].split(",")]
Ks = [int(x) for x in sys.argv[3].split(",")]
D, Q, CH = 768, 4096, 1_000_000
torch.backends.cuda.matmul.allow_tf32 = True  # as the reference script sets it (no effect on fp16)


def median_time(fn, iters=3, warm=1):
    for _ in range(warm):
        fn()
    torch.cuda.synchronize()
    ts = []
    for _ in range(iters):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record(); fn(); b.record(); torch.cuda.synchronize()
        ts.append(a.elapsed_time(b) / 1e3)
    return sorted(ts)[len(ts) // 2]


for N in Ns:
    P = F.normalize(torch.randn(N, D, device="cuda", dtype=torch.float16), dim=-1)
    q = F.normalize(torch.randn(Q, D, device="cuda", dtype=torch.float16), dim=-1)
    for K in Ks:
        def search():
            best_s = best_i = None
            for c in range(0, N, CH):
                v, i = (q @ P[c:c + CH].T).topk(K, dim=-1)
                i = i + c
                if best_s is None:
                    best_s, best_i = v, i
                else:
                    vv, ii = torch.cat([best_s, v], 1), torch.cat([best_i, i], 1)
                    best_s, j = vv.topk(K, dim=-1)
                    best_i = ii.gather(1, j)
            return best_s, best_i
        t = median_time(search)
        tg = median_time(lambda: [q @ P[c:c + CH].T for c in range(0, N, CH)])
        rec = {"section": "speed", "engine": "torch matmul+topk", "n": N, "d": D, "q": Q, "k": K, "sec": t, "qps": Q / t,
               "gemm_only_sec": tg, "device": torch.cuda.get_device_name(0), "torch": torch.__version__}
        print(json.dumps(rec), file=out, flush=True)
        print(json.dumps(rec), flush=True)
    del P, q
    torch.cuda.empty_cache()

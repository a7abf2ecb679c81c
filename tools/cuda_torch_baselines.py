"""cuda_torch_baselines.py: PyTorch baselines on the GPU for tools/bench_dsa_cuda.sh and
tools/cuda_check_gpu.sh (reference timings only; nothing of the product uses PyTorch).

- torch.topk(k=2048) over 32K / 128K scores, 1 and 64 rows (against our radix top-k).
- Dense attention for one DeepSeek-V3.2 layer's core: scaled_dot_product_attention in bf16 (whatever
  backend PyTorch picks: flash, cuDNN or memory-efficient) in the non-absorbed MLA shapes (128 heads, qk 192 =
  128 nope + 64 rope, v 128), a 256-query chunk and one decode query over CTX keys (all keys visible).
Prints markdown table rows: median of 20-50 timed runs with CUDA events after 3-5 warm-ups.
"""
import torch
import torch.nn.functional as F


def median_ms(fn, reps, warm=3):
    for _ in range(warm):
        fn()
    ts = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        ts.append(a.elapsed_time(b))
    ts.sort()
    return ts[len(ts) // 2]


def main():
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, cuDNN {torch.backends.cudnn.version()}, {torch.cuda.get_device_name()}")
    for n in (32768, 131072):
        for rows in (1, 64):
            x = torch.randn(rows, n, device="cuda")
            ms = median_ms(lambda: torch.topk(x, 2048, dim=-1), 50, warm=5)
            print(f"| torch.topk k=2048 {rows} rows x {n // 1024}K | {ms * 1000:.1f} us | us/row {ms * 1000 / rows:.2f} |")
    for ctx in (8192, 32768, 65536, 131072):
        k = torch.randn(1, 128, ctx, 192, device="cuda", dtype=torch.bfloat16)
        v = torch.randn(1, 128, ctx, 128, device="cuda", dtype=torch.bfloat16)
        for nq in (256, 1):
            q = torch.randn(1, 128, nq, 192, device="cuda", dtype=torch.bfloat16)
            ms = median_ms(lambda: F.scaled_dot_product_attention(q, k, v), 20)
            fl = 2.0 * 128 * nq * ctx * (192 + 128)
            print(f"| torch SDPA bf16 dense, {nq} queries x {ctx // 1024}K keys, h128 qk192 v128 | "
                  f"{ms * 1000:.1f} us | {fl / ms / 1e9:.1f} TFLOP/s |")
        del k, v


if __name__ == "__main__":
    main()

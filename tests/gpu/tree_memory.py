"""The agent's memory measurement of a runtime's process tree against nvidia-smi, on a GPU
machine: a PyTorch process holds 4 GiB of GPU memory and 17 threads; the agent's
`tree_memory` example measures it.

    cargo build -p switchyard-agent --example tree_memory
    python3 tests/gpu/tree_memory.py target/debug/examples/tree_memory

Run on an H100 (2026-12-07): agent gpu_mb 4614 = nvidia-smi 4614, resident_mb 607 (VmRSS
604), 2 processes (the process and the measuring child) of 34 threads; total 5221 MiB. The
agent before this fix summed every thread as a process (about 34 x 604 + 4614 MiB).
"""
import json, os, subprocess, sys, threading, time
import torch
held = torch.empty(4 * 1024**3, dtype=torch.uint8, device="cuda")
torch.cuda.synchronize()
stop = threading.Event()
for _ in range(16):
    threading.Thread(target=stop.wait, daemon=True).start()
time.sleep(1)
me = os.getpid()
agent = json.loads(subprocess.check_output([sys.argv[1], str(me)]))
smi = subprocess.check_output(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"]).decode()
smi_mb = sum(int(m) for p, m in (l.split(", ") for l in smi.strip().splitlines()) if int(p) == me)
rss_kb = int([l for l in open(f"/proc/{me}/status") if l.startswith("VmRSS")][0].split()[1])
threads = len(os.listdir(f"/proc/{me}/task"))
print(json.dumps({"agent": agent, "nvidia_smi_mb": smi_mb, "vmrss_mb": rss_kb // 1024, "threads": threads,
                  "torch_reserved_mb": torch.cuda.memory_reserved() // 2**20}))
stop.set()

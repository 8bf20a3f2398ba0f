#!/usr/bin/env python3
"""Measure prompt-processing (prefill) speed and prefix-cache behaviour of a running
llama.cpp server (`llama-server`), to calibrate Switchyard's TTFT model.

Usage:
  python3 tests/bench/prefill_calibration.py --url http://127.0.0.1:PORT --out FILE.json
      [--lengths 500,1000,2000,4000,8000] [--reps 2] [--max-cold-s 40]
      [--model-desc "..."] [--server-flags "..."]

Stdlib only. For each target prompt length it sends, `--reps` times:
  cold: POST /v1/chat/completions (stream false, max_tokens 1, temperature 0) with a fresh
        system prompt of about that many tokens (starts with a random nonce, so no prefix of
        it is cached) and a short user question;
  warm: the same system prompt with a different short user question (the system prompt is
        then served from the slot's prefix cache).
Each request records wall time and whatever the server reports (usage.prompt_tokens,
usage.prompt_tokens_details.cached_tokens, timings.prompt_n / cache_n / prompt_ms /
prompt_per_second). Rows keep the median over the repetitions.

It then fits TTFT_ms = base_ms + uncached_tokens * 1000 / prefill_tps by least squares
over every cold and warm request, and reports per row the predicted vs measured cold/warm
ratio. A length is skipped when the cold request is predicted (from the cold requests so
far) to take longer than --max-cold-s.
"""
import argparse
import datetime
import json
import os
import platform
import random
import statistics
import time
import urllib.request

WORDS = """
railway station signal freight engine yard track switch coupling wagon timetable
departure arrival platform conductor lantern whistle bridge tunnel valley river mountain
harbour warehouse market village city county border weather morning evening winter summer
autumn spring garden orchard meadow forest hill stone iron copper silver golden wooden
careful quiet rapid steady gentle heavy light narrow broad ancient modern simple complex
request response machine memory queue latency budget deadline policy router operator
dashboard heartbeat sandbox failure recovery capacity throughput scheduler priority cluster
network packet message header payload stream buffer cache prefix token model runtime server
client session account invoice ledger balance price cost energy power battery thermal fan
keyboard window mirror pencil notebook library chapter sentence paragraph letter number
orange purple yellow green blue crimson scarlet amber ivory charcoal velvet cotton linen
teacher student doctor farmer baker sailor pilot painter writer builder miner weaver
quickly slowly gladly rarely often never always sometimes usually seldom early late
because although however therefore meanwhile otherwise perhaps certainly probably indeed
""".split()

QUESTIONS = [
    "Which track should the next freight train use?",
    "How many wagons can the east yard hold tonight?",
    "Summarise the routing policy in one sentence.",
    "What happens when a node stops sending heartbeats?",
    "Name the busiest platform this morning.",
    "Is the river bridge open for heavy engines?",
]


def post(url, body, timeout=600):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    t0 = time.perf_counter()
    with urllib.request.urlopen(req, timeout=timeout) as r:
        data = json.loads(r.read())
    return data, (time.perf_counter() - t0) * 1000.0


def count_tokens(base, text):
    try:
        data, _ = post(base + "/tokenize", {"content": text}, timeout=60)
        return len(data["tokens"])
    except Exception:
        return None


def words_text(rng, n_words):
    out, line = [], []
    for i in range(n_words):
        w = rng.choice(WORDS)
        line.append(w.capitalize() if not line else w)
        if len(line) >= rng.randint(6, 14):
            out.append(" ".join(line) + ".")
            line = []
    if line:
        out.append(" ".join(line) + ".")
    return " ".join(out)


class PromptMaker:
    """Builds system prompts of about `target` tokens; learns tokens-per-word via /tokenize."""

    def __init__(self, base):
        self.base = base
        self.tpw = None  # tokens per word

    def make(self, target, seed):
        rng = random.Random(seed)
        nonce = "Session %016x. " % random.getrandbits(64)
        if self.tpw is None:
            probe = words_text(random.Random(seed), 400)
            n = count_tokens(self.base, probe)
            self.tpw = (n / 400) if n else 1.5
        n_words = max(10, int(target / self.tpw))
        for _ in range(4):
            text = nonce + words_text(random.Random(seed), n_words)
            n = count_tokens(self.base, text)
            if n is None or abs(n - target) <= max(5, target * 0.01):
                break
            n_words = max(10, int(n_words * target / n))
        return text, n


def chat(base, system, question):
    body = {"model": "tiny", "stream": False, "max_tokens": 1, "temperature": 0,
            "messages": [{"role": "system", "content": system},
                         {"role": "user", "content": question}]}
    data, wall_ms = post(base + "/v1/chat/completions", body)
    usage = data.get("usage") or {}
    timings = data.get("timings") or {}
    rec = {"wall_ms": round(wall_ms, 2),
           "prompt_tokens": usage.get("prompt_tokens"),
           "cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens")}
    for k in ("prompt_n", "cache_n", "prompt_ms", "prompt_per_second"):
        if k in timings:
            rec[k] = timings[k]
    try:
        rec["loadavg_1m"] = round(os.getloadavg()[0], 2)
    except OSError:
        pass
    return rec


def uncached(rec):
    if rec.get("prompt_n") is not None:
        return rec["prompt_n"]
    return (rec.get("prompt_tokens") or 0) - (rec.get("cached_tokens") or 0)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def fit(points):
    """Least squares y = a + b x; returns (a, b)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    sxy = sum((x - mx) * (y - my) for x, y in points)
    b = sxy / sxx
    return my - b * mx, b


def solve(a, b):
    """Gaussian elimination for the small normal equations below."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        for r in range(n):
            if r != c and m[c][c]:
                f = m[r][c] / m[c][c]
                m[r] = [x - f * y for x, y in zip(m[r], m[c])]
    return [m[i][n] / m[i][i] for i in range(n)]


def fit_attention(recs):
    """Least squares TTFT_ms = base + u*a + u*(c + u/2)*b over (uncached u, cached c, ms):
    a = ms per token of the context-independent work (1000/a = short-context prefill tok/s),
    b = extra ms per token per token already in context (attention over the prefix)."""
    rows = [(1.0, u, u * (c + u / 2.0)) for u, c, _ in recs]
    ys = [y for _, _, y in recs]
    ata = [[sum(r[i] * r[j] for r in rows) for j in range(3)] for i in range(3)]
    aty = [sum(r[i] * y for r, y in zip(rows, ys)) for i in range(3)]
    return solve(ata, aty)


def machine_facts():
    facts = {"nproc": os.cpu_count(), "platform": platform.platform()}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    facts["cpu"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    try:
        facts["loadavg_at_start"] = os.getloadavg()
    except OSError:
        pass
    return facts


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--url", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--lengths", default="500,1000,2000,4000,8000")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--max-cold-s", type=float, default=40.0)
    ap.add_argument("--model-desc", default="")
    ap.add_argument("--server-flags", default="")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    base = a.url.rstrip("/")
    lengths = [int(x) for x in a.lengths.split(",")]

    started = datetime.datetime.now(datetime.timezone.utc)
    facts = machine_facts()
    try:
        with urllib.request.urlopen(base + "/v1/models", timeout=30) as r:
            facts["server_model_meta"] = json.loads(r.read())["data"][0].get("meta")
    except Exception:
        pass

    maker = PromptMaker(base)
    raw = {n: {"cold": [], "warm": []} for n in lengths}
    skipped = []
    cold_pts = []  # (uncached tokens, wall_ms) of cold requests so far, for the skip rule
    # Warm up the server once (first request pays one-off costs).
    chat(base, "Warm up.", "Hello?")
    for rep in range(a.reps):
        for n in lengths:
            if n in skipped:
                continue
            if len(cold_pts) >= 2:
                ca, cb = fit(cold_pts) if len({x for x, _ in cold_pts}) > 1 else (0, cold_pts[0][1] / cold_pts[0][0])
                pred_s = (ca + cb * n) / 1000.0
                if pred_s > a.max_cold_s:
                    print(f"skip {n} tokens: predicted cold {pred_s:.1f} s > {a.max_cold_s} s", flush=True)
                    skipped.append(n)
                    continue
            system, ntok = maker.make(n, seed=rep * 100003 + n)
            q_cold = QUESTIONS[(rep * 2) % len(QUESTIONS)]
            q_warm = QUESTIONS[(rep * 2 + 1) % len(QUESTIONS)]
            cold = chat(base, system, q_cold)
            cold["system_tokens"] = ntok
            warm = chat(base, system, q_warm)
            raw[n]["cold"].append(cold)
            raw[n]["warm"].append(warm)
            cold_pts.append((uncached(cold), cold["wall_ms"]))
            print(f"rep {rep} target {n}: prompt {cold['prompt_tokens']} cold {cold['wall_ms']:.0f} ms "
                  f"(cached {cold['cached_tokens']}), warm {warm['wall_ms']:.0f} ms "
                  f"(cached {warm['cached_tokens']})", flush=True)

    points = [(uncached(r), r["wall_ms"]) for n in lengths for k in ("cold", "warm")
              for r in raw[n][k]]
    base_ms, ms_per_tok = fit(points)
    prefill_tps = 1000.0 / ms_per_tok
    # The same fit over the fastest repetition of each (length, cold/warm): less hurt by
    # other processes stealing the cores than the fit over every point.
    best = [min(((uncached(r), r["wall_ms"]) for r in raw[n][k]), key=lambda p: p[1])
            for n in lengths for k in ("cold", "warm") if raw[n][k]]
    best_base_ms, best_ms_per_tok = fit(best)

    def cached_of(r):
        if r.get("cache_n") is not None:
            return r["cache_n"]
        return r.get("cached_tokens") or 0

    att_recs = [(uncached(r), cached_of(r), r["wall_ms"]) for n in lengths
                for k in ("cold", "warm") for r in raw[n][k]]
    att = fit_attention(att_recs)
    att_best = fit_attention([min(((uncached(r), cached_of(r), r["wall_ms"]) for r in raw[n][k]),
                                  key=lambda p: p[2])
                              for n in lengths for k in ("cold", "warm") if raw[n][k]])

    def predict_att(u, c, f=att):
        return f[0] + u * f[1] + u * (c + u / 2.0) * f[2]

    def predict(u):
        return base_ms + u * ms_per_tok

    rows = []
    for n in lengths:
        c, w = raw[n]["cold"], raw[n]["warm"]
        if not c:
            continue
        cold_ms = median([r["wall_ms"] for r in c])
        warm_ms = median([r["wall_ms"] for r in w])
        cu = median([uncached(r) for r in c])
        wu = median([uncached(r) for r in w])
        ratio = cold_ms / warm_ms
        pred_ratio = predict(cu) / predict(wu)
        cc = median([cached_of(r) for r in c])
        wc = median([cached_of(r) for r in w])
        att_ratio = predict_att(cu, cc) / predict_att(wu, wc)
        rows.append({
            "target_tokens": n,
            "prompt_tokens": median([r["prompt_tokens"] for r in c]),
            "cold_ms": round(cold_ms, 1),
            "warm_ms": round(warm_ms, 1),
            "cold_ms_min": round(min(r["wall_ms"] for r in c), 1),
            "warm_ms_min": round(min(r["wall_ms"] for r in w), 1),
            "cold_cached": median([r["cached_tokens"] for r in c]),
            "warm_cached": median([r["cached_tokens"] for r in w]),
            "cold_uncached": cu,
            "warm_uncached": wu,
            "cold_prompt_ms": median([r.get("prompt_ms") for r in c]),
            "warm_prompt_ms": median([r.get("prompt_ms") for r in w]),
            "cold_prompt_per_second": median([r.get("prompt_per_second") for r in c]),
            "ratio": round(ratio, 2),
            "predicted_cold_ms": round(predict(cu), 1),
            "predicted_warm_ms": round(predict(wu), 1),
            "predicted_ratio": round(pred_ratio, 2),
            "ratio_error": round((pred_ratio - ratio) / ratio, 3),
            "attention_fit_cold_ms": round(predict_att(cu, cc), 1),
            "attention_fit_warm_ms": round(predict_att(wu, wc), 1),
            "attention_fit_ratio": round(att_ratio, 2),
            "attention_fit_ratio_error": round((att_ratio - ratio) / ratio, 3),
            "cold_prefill_tps_measured": round(cu / cold_ms * 1000.0, 1),
        })

    result = {
        "tool": "tests/bench/prefill_calibration.py",
        "run_started_utc": started.isoformat(timespec="seconds"),
        "run_finished_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "url": base,
        "machine": facts,
        "model": a.model_desc,
        "server_flags": a.server_flags,
        "note": a.note,
        "reps": a.reps,
        "lengths_requested": lengths,
        "lengths_skipped": skipped,
        "max_cold_s": a.max_cold_s,
        "fit": {"formula": "TTFT_ms = base_ms + uncached_tokens * 1000 / prefill_tps",
                "points": len(points), "base_ms": round(base_ms, 1),
                "prefill_tps": round(prefill_tps, 1)},
        "fit_fastest_rep": {"note": "same formula, fitted over the fastest repetition of each "
                            "(length, cold/warm) only", "points": len(best),
                            "base_ms": round(best_base_ms, 1),
                            "prefill_tps": round(1000.0 / best_ms_per_tok, 1)},
        "fit_attention": {
            "formula": "TTFT_ms = base_ms + u*1000/prefill_tps_short + u*(cached + u/2)*attn_ms_per_token_pair"
                       " (u = uncached tokens); prefill speed then falls as the context grows",
            "points": len(att_recs), "base_ms": round(att[0], 1),
            "prefill_tps_short": round(1000.0 / att[1], 1) if att[1] > 0 else None,
            "attn_us_per_token_pair": round(att[2] * 1000.0, 5),
            "fastest_rep": {"base_ms": round(att_best[0], 1),
                            "prefill_tps_short": round(1000.0 / att_best[1], 1) if att_best[1] > 0 else None,
                            "attn_us_per_token_pair": round(att_best[2] * 1000.0, 5)}},
        "rows": rows,
        "raw": {str(n): raw[n] for n in lengths},
    }
    try:
        result["machine"]["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")
    print(json.dumps({"fit": result["fit"], "fit_fastest_rep": result["fit_fastest_rep"],
                      "fit_attention": result["fit_attention"], "rows": [
        {k: r[k] for k in ("prompt_tokens", "cold_ms", "warm_ms", "cold_ms_min", "warm_ms_min", "warm_cached", "ratio",
                           "predicted_ratio", "ratio_error", "attention_fit_ratio",
                           "attention_fit_ratio_error")} for r in rows]}, indent=1))


if __name__ == "__main__":
    main()

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
ratio. A length is skipped when the cold request is predicted (the longest cold request so
far, scaled quadratically) to take longer than --max-cold-s. Besides that linear fit (`fit`), it reports the same
formula fitted on relative error (`fit_relative`) and two models in which prefill slows as
the context grows (`fit_attention`, `fit_context`); see MODELS. `--reanalyse OLD.json`
recomputes all of them from the raw requests saved in an earlier output.

The committed result (tests/bench/calibration/llama-server-prefill.json) used the tiny model
of tests/runtimes/gen_tiny_model.py at the size ../shared/runtimes.md names (8 layers, width
512, 8 heads, FF 1536, context 16384). The generator has no size options; a wrapper that
imports it, sets N_LAYER, N_EMBD, N_HEAD, N_FF, N_CTX = 8, 512, 8, 1536, 16384 and calls
train_tokenizer(), make_weights() and write_gguf() produces it. Server:
  ../shared/runtimes/llama-server -m tiny.gguf -a tiny -c 16384 --host 127.0.0.1 --port P -t 2 -np 1
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


def solve(a, b):
    """Gaussian elimination with partial pivoting for the small normal equations below."""
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


def wls(features, ys, relative):
    """Least squares of ys on the feature rows; relative=True minimises the squared relative
    error (weights 1/y^2), so short and long requests count alike."""
    ws = [1.0 / (y * y) if relative else 1.0 for y in ys]
    k = len(features[0])
    ata = [[sum(w * f[i] * f[j] for f, w in zip(features, ws)) for j in range(k)] for i in range(k)]
    aty = [sum(w * f[i] * y for f, y, w in zip(features, ys, ws)) for i in range(k)]
    return solve(ata, aty)


def cached_of(r):
    if r.get("cache_n") is not None:
        return r["cache_n"]
    return r.get("cached_tokens") or 0


# Each model: name -> (features(u, c), relative weights?, description). u = uncached tokens of
# the request, c = tokens served from the prefix cache.
MODELS = {
    "fit": (lambda u, c: (1.0, u), False,
            "TTFT_ms = base_ms + uncached_tokens * 1000 / prefill_tps; ordinary least squares "
            "over every cold and warm request"),
    "fit_relative": (lambda u, c: (1.0, u), True,
                     "same formula, least squares of the relative error (weights 1/TTFT^2), so "
                     "the short warm requests weigh as much as the long cold ones"),
    "fit_attention": (lambda u, c: (1.0, u, u * (c + u / 2.0)), True,
                      "TTFT_ms = base_ms + u * 1000 / prefill_tps + u * (c + u/2) * attn_us_per_token_pair / 1000 "
                      "(u uncached, c cached tokens): each new token also attends to every token "
                      "before it, so prefill slows as the context grows; relative least squares"),
    "fit_context": (lambda u, c: (1.0, u, u * (c + u / 2.0), c), True,
                    "fit_attention plus c * cached_read_us_per_token / 1000: a cost per cached "
                    "token paid by every request that reuses the prefix (reading its KV cache); "
                    "relative least squares"),
}


def predict(coef, feats):
    return sum(a * f for a, f in zip(coef, feats))


def analyse(raw, lengths):
    recs = [(n, k, uncached(r), cached_of(r), r["wall_ms"]) for n in lengths
            for k in ("cold", "warm") for r in raw[n][k]]
    fastest = []
    for n in lengths:
        for k in ("cold", "warm"):
            mine = [x for x in recs if x[0] == n and x[1] == k]
            if mine:
                fastest.append(min(mine, key=lambda x: x[4]))
    fits, coefs = {}, {}
    for name, (feat, rel, desc) in MODELS.items():
        entry = {"formula": desc, "points": len(recs)}
        for label, data in (("all", recs), ("fastest_rep", fastest)):
            try:
                coef = wls([feat(u, c) for _, _, u, c, _ in data], [y for *_, y in data], rel)
            except ZeroDivisionError:  # too few distinct lengths for this model
                coef = [float("nan")] * len(feat(1, 0))
            out = {"base_ms": round(coef[0], 1) if coef[0] == coef[0] else None,
                   "prefill_tps": round(1000.0 / coef[1], 1) if coef[1] > 0 else None}
            if len(coef) > 2:
                out["attn_us_per_token_pair"] = round(coef[2] * 1000.0, 5)
            if len(coef) > 3:
                out["cached_read_us_per_token"] = round(coef[3] * 1000.0, 3)
            if label == "all":
                entry.update(out)
                coefs[name] = coef
            else:
                entry["fastest_rep"] = dict(out, note="fitted over the fastest repetition of "
                                                      "each (length, cold/warm) only")
        fits[name] = entry

    rows = []
    for n in lengths:
        c, w = raw[n]["cold"], raw[n]["warm"]
        if not c:
            continue
        cold_ms = median([r["wall_ms"] for r in c])
        warm_ms = median([r["wall_ms"] for r in w])
        cu, wu = median([uncached(r) for r in c]), median([uncached(r) for r in w])
        cc, wc = median([cached_of(r) for r in c]), median([cached_of(r) for r in w])
        ratio = cold_ms / warm_ms
        row = {
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
        }
        for name, (feat, _, _) in MODELS.items():
            pc_ = predict(coefs[name], feat(cu, cc))
            pw = predict(coefs[name], feat(wu, wc))
            if not (pc_ == pc_ and pw == pw and pw != 0):
                row[name] = None
                continue
            pr = pc_ / pw
            row[name] = {"cold_ms": round(pc_, 1), "warm_ms": round(pw, 1),
                         "ratio": round(pr, 2), "ratio_error": round((pr - ratio) / ratio, 3)}
        rows.append(row)
    return fits, rows


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
    ap.add_argument("--url", help="llama-server base URL, e.g. http://127.0.0.1:8080")
    ap.add_argument("--out", required=True)
    ap.add_argument("--reanalyse", metavar="JSON",
                    help="recompute the fits and rows from the raw requests of an earlier output "
                         "file (no server needed) and write them to --out")
    ap.add_argument("--lengths", default="500,1000,2000,4000,8000")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--max-cold-s", type=float, default=40.0)
    ap.add_argument("--model-desc", default="")
    ap.add_argument("--server-flags", default="")
    ap.add_argument("--note", default="")
    a = ap.parse_args()
    if a.reanalyse:
        with open(a.reanalyse) as f:
            result = json.load(f)
        lengths = result["lengths_requested"]
        raw = {n: result["raw"][str(n)] for n in lengths}
        for name in MODELS:
            result.pop(name, None)
        for old in ("fit_fastest_rep",):
            result.pop(old, None)
        result.pop("rows", None)
        raw_saved = result.pop("raw")
        fits, rows = analyse(raw, lengths)
        result.update(fits)
        result["rows"] = rows
        result["raw"] = raw_saved  # keep the raw requests last
        write(a.out, result)
        summary(result)
        return
    if not a.url:
        ap.error("--url is required unless --reanalyse is given")
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
            if cold_pts:
                # Conservative: scale the longest cold request so far quadratically (attention
                # makes prefill superlinear), so a length is skipped rather than overrunning.
                u0, ms0 = max(cold_pts)
                pred_s = ms0 * max(1.0, n / max(u0, 1)) ** 2 / 1000.0
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

    fits, rows = analyse(raw, lengths)

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
        **fits,
        "rows": rows,
        "raw": {str(n): raw[n] for n in lengths},
    }
    try:
        result["machine"]["loadavg_at_end"] = os.getloadavg()
    except OSError:
        pass
    write(a.out, result)
    summary(result)


def write(path, result):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=1)
        f.write("\n")


def summary(result):
    out = {name: {k: v for k, v in result[name].items() if k != "formula"} for name in MODELS}
    out["rows"] = [{k: ((r[k] or {}).get("ratio") if k in MODELS else r[k])
                    for k in ("prompt_tokens", "cold_ms", "warm_ms", "warm_cached", "ratio", *MODELS)}
                   for r in result["rows"]]
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

// Helpers for Switchyard routing policies written in JavaScript (jco / componentize-js).
//
// A policy is one class with a `decide(req, candidates)` method (and, if it takes params, a
// `configure(params)` method); `serve(PolicyClass)` turns it into the component's exports
// (`configure`, `setCluster`, `route`). The candidates come as `Candidate` objects: the node,
// its variant of the requested model, its live load and how many of the prompt's tokens it is
// estimated to hold already. The helpers are the Rust SDK's (`switchyard-policy-sdk`) and the
// Python library's (`plugins/python/switchyard_policy.py`), with the same results, named the
// JavaScript way (camelCase): `ineligibility`, `loadRatio`, `loadDelayMs`, `effectiveLoad`,
// `noCapacity`, `route`, `reject`, `log`, `decodeParams`, `serve`.
//
// Contract: switchyard:policy@0.4.0 (`wit/policy.wit`). How its types reach JavaScript
// (componentize-js 0.22): records are plain objects with camelCase fields (`inFlight`,
// `maxConcurrency`, `tokensPerSec`, `promptTokens`, `maxTokens`, `contextLength`, `loadMs`);
// `option<T>` is the value or `undefined`; `u64` is a BigInt (`version`, `memUsedMb`,
// `lastSeenMs`); other numbers are Numbers; `list<u32>` (the candidates) is a Uint32Array;
// `list<tuple<string, string>>` is an Array of two-element Arrays; an enum is its case name
// as a string (`'info'`); the `decision` variant is `{ tag: 'route' | 'reject', val: record }`.
//
// Numbers follow the Rust SDK: `loadRatio` and `effectiveLoad` are rounded to f32 (as Rust
// computes and sorts them), so orderings and ties are the Rust policy's exactly.

import { log as hostLog } from 'switchyard:policy/host@0.4.0';

// Targets worth returning: the first is the choice, the rest are retries before the first
// byte (the host refuses more than 64).
export const MAX_TARGETS = 8;

// The load delay assumed for a cold model that was never measured.
export const UNMEASURED_LOAD_MS = 30_000;

const f32 = Math.fround;

/** One node that serves the requested model, as one `route` call sees it. */
export class Candidate {
  constructor(index, node, variant, inFlight, queued, cachedTokens) {
    this.index = index;
    this.node = node;
    this.variant = variant;
    this.inFlight = inFlight;
    this.queued = queued;
    this.cachedTokens = cachedTokens;
  }

  get name() {
    return this.node.name;
  }

  get maxConcurrency() {
    return this.node.maxConcurrency;
  }
}

/** Why `c` cannot take `req` at all (`null`: it can). */
export function ineligibility(c, req) {
  if (!c.node.healthy) return 'offline';
  if (req.maxTokens !== undefined) {
    if (req.maxTokens > c.node.maxTokens) return "max_tokens above the node's limit";
    // u32 arithmetic saturates in Rust.
    if (Math.min(req.promptTokens + req.maxTokens, 0xffffffff) > c.variant.contextLength) {
      return 'prompt + max_tokens exceed the context length';
    }
  } else if (req.promptTokens > c.variant.contextLength) {
    return 'prompt exceeds the context length';
  }
  return null;
}

/** `in-flight + queued` relative to `max-concurrency` (an f32, as in Rust). */
export function loadRatio(c) {
  return f32(f32(c.inFlight + c.queued) / f32(Math.max(c.node.maxConcurrency, 1)));
}

/** How long the node needs to load the model first (0 when it is resident). */
export function loadDelayMs(c) {
  if (c.variant.loaded) return 0;
  return c.variant.loadMs !== undefined ? c.variant.loadMs : UNMEASURED_LOAD_MS;
}

/** `loadRatio` with the model's warmth counted in: a node that must load the model first
 * counts a quarter node more, plus a full node per 10 s of estimated load time (an f32). */
export function effectiveLoad(c) {
  const delay = loadDelayMs(c);
  const cold = delay > 0 ? f32(0.25 + f32(f32(delay) / 10_000)) : 0;
  return f32(loadRatio(c) + cold);
}

/** Send the request to `targets` (Candidates) in order (at most `MAX_TARGETS` are kept). */
export function route(targets, reason, waitForFirst = false) {
  return {
    tag: 'route',
    val: {
      targets: Array.from(targets).slice(0, MAX_TARGETS).map((c) => c.index),
      reason,
      waitForFirst,
    },
  };
}

/** Refuse the request with an HTTP status and a message for the client. */
export function reject(status, message) {
  return { tag: 'reject', val: { status, message } };
}

/** 404 when no node serves the model at all, 503 when some do but none can take it now. */
export function noCapacity(req, candidates) {
  if (candidates.length > 0) {
    return reject(503, `no healthy node can serve model '${req.model}' right now`);
  }
  return reject(404, `model '${req.model}' is not served by any node`);
}

/** One line in the controller's log, tagged with the policy. `level`: trace, debug, info,
 * warn or error. */
export function log(message, level = 'info') {
  hostLog(level, String(message));
}

/** The policy's `[params]` as an object; an unknown key is refused by name. */
export function decodeParams(params, known) {
  const decoded = params ? JSON.parse(params) : {};
  if (decoded === null || typeof decoded !== 'object' || Array.isArray(decoded)) {
    throw new Error('[params] must be a table');
  }
  const unknown = Object.keys(decoded)
    .filter((k) => !known.includes(k))
    .sort();
  if (unknown.length > 0) {
    throw new Error(`unknown key '${unknown[0]}'; known: ${known.join(', ') || 'none'}`);
  }
  return decoded;
}

/** Compare two names as Rust (`str::cmp`, bytewise UTF-8) and Python do: by code point, not
 * by UTF-16 unit (they differ only for characters beyond U+FFFF against U+E000..U+FFFF). */
export function compareNames(a, b) {
  if (a === b) return 0;
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    let x = a.charCodeAt(i);
    let y = b.charCodeAt(i);
    if (x !== y) {
      // Surrogates (0xD800..0xDFFF) sort after 0xE000..0xFFFF in code point order.
      if (x >= 0xd800) x += x <= 0xdfff ? 0x2000 : -0x800;
      if (y >= 0xd800) y += y <= 0xdfff ? 0x2000 : -0x800;
      return x < y ? -1 : 1;
    }
  }
  return a.length < b.length ? -1 : a.length > b.length ? 1 : 0;
}

/** `x` with `digits` decimals, as Rust's `{:.N}` and Python's `:.Nf` write it: an exact tie
 * (1.25 to one decimal) goes to the even digit, where `Number.prototype.toFixed` rounds it
 * up (`(1.25).toFixed(1)` is "1.3"; Rust and Python write "1.2"). */
export function fixed(x, digits) {
  const s = x.toFixed(digits);
  if (!Number.isFinite(x) || Math.abs(x) >= 1e21 || digits > 20) return s;
  const exact = Math.abs(x).toFixed(100); // the binary value's own decimals
  const cut = exact.indexOf('.') + 1 + digits;
  if (!/^50*$/.test(exact.slice(cut))) return s; // not a tie: toFixed is already right
  const down = exact.slice(0, digits > 0 ? cut : cut - 1);
  return Number(down[down.length - 1]) % 2 === 0 ? (x < 0 ? '-' : '') + down : s;
}

function message(error) {
  return error instanceof Error ? error.message : String(error);
}

/** The component's exports around `PolicyClass`: `configure` builds one policy instance from
 * the params (a thrown error refuses them, its message shown to the operator), `setCluster`
 * keeps the cluster, and `route` hands `decide` the candidates as `Candidate` objects. Use:
 * `export const { configure, setCluster, route } = serve(MyPolicy);` */
export function serve(PolicyClass) {
  let policy = null;
  let nodes = [];
  return {
    configure(params) {
      let configured;
      try {
        configured = new PolicyClass();
        if (typeof configured.configure === 'function') {
          configured.configure(params);
        } else if (params !== '' && params !== '{}') {
          decodeParams(params, []);
        }
      } catch (error) {
        // componentize-js turns a thrown value into `result::err`: throw the message string.
        throw message(error);
      }
      policy = configured;
    },

    setCluster(version, clusterNodes) {
      nodes = clusterNodes;
    },

    route(req, candidates) {
      const views = [];
      for (let i = 0; 5 * i + 5 <= candidates.length; i++) {
        const node = nodes[candidates[5 * i]];
        const variant = node.models[candidates[5 * i + 1]];
        views.push(
          new Candidate(i, node, variant, candidates[5 * i + 2], candidates[5 * i + 3], candidates[5 * i + 4]),
        );
      }
      return policy.decide(req, views);
    },
  };
}

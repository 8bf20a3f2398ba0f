// {{name}}: every eligible node, least loaded first (the model's warmth counted in), ties
// broken by measured tokens/s (faster first), then by name. Change `decide`; the helpers are
// in switchyard_policy.js (the Rust SDK's, named the JavaScript way).

import {
  compareNames, effectiveLoad, fixed, ineligibility, loadDelayMs, noCapacity, route as routeTo, serve,
} from './switchyard_policy.js';

class Policy {
  // The policy file's [stage.params], as JSON; throw to refuse them.
  configure(params) {
    if (params !== '' && params !== '{}') throw new Error(`this policy takes no params, got ${params}`);
  }

  decide(req, candidates) {
    const eligible = candidates.filter((c) => ineligibility(c, req) === null);
    if (eligible.length === 0) return noCapacity(req, candidates);
    const keyed = eligible.map((c) => ({ c, load: effectiveLoad(c), tps: c.node.tokensPerSec ?? 0 }));
    keyed.sort((a, b) => a.load - b.load || b.tps - a.tps || compareNames(a.c.name, b.c.name));
    const ordered = keyed.map((k) => k.c);
    const best = ordered[0];
    const delay = loadDelayMs(best);
    const warmth = delay ? `, must load the model first (about ${fixed(delay / 1000, 1)} s)` : '';
    return routeTo(ordered, `least loaded: ${best.name} at ${best.inFlight + best.queued}/${best.maxConcurrency}${warmth}`);
  }
}

export const { configure, setCluster, route } = serve(Policy);

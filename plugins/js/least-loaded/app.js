// least-loaded, in JavaScript: every eligible node ordered by its load with the model's warmth
// counted in, ties broken by measured tokens/s (faster first), then by name. No params.
// The same rule as the shipped Rust `least-loaded` (plugins/least-loaded), for its fixtures.

import {
  compareNames, effectiveLoad, fixed, ineligibility, loadDelayMs, noCapacity, route as routeTo, serve,
} from '../switchyard_policy.js';

class LeastLoaded {
  decide(req, candidates) {
    const eligible = candidates.filter((c) => ineligibility(c, req) === null);
    if (eligible.length === 0) return noCapacity(req, candidates);
    // Each key once (effective load as an f32, tokens/s), then load up, speed down, name up.
    const keyed = eligible.map((c) => ({ c, load: effectiveLoad(c), tps: c.node.tokensPerSec ?? 0 }));
    keyed.sort((a, b) => a.load - b.load || b.tps - a.tps || compareNames(a.c.name, b.c.name));
    const ordered = keyed.map((k) => k.c);
    const best = ordered[0];
    const delay = loadDelayMs(best);
    const warmth = delay ? `, must load the model first (about ${fixed(delay / 1000, 1)} s)` : '';
    const reason = `least loaded: ${best.name} at ${best.inFlight + best.queued}/${best.maxConcurrency}${warmth}`;
    return routeTo(ordered, reason);
  }
}

export const { configure, setCluster, route } = serve(LeastLoaded);

// A hostile JavaScript policy, for the tests that prove the sandbox contains interpreted
// policies as it contains compiled ones. `[stage.params] mode` picks the misbehaviour
// (`raise`, `spin`, `allocate`); it happens only on requests tagged `hostile = "go"`.
// Every other request goes to the first eligible candidate.

import { decodeParams, ineligibility, noCapacity, route as routeTo, serve } from '../switchyard_policy.js';

class Hostile {
  constructor() {
    this.mode = 'raise';
  }

  configure(params) {
    const { mode = 'raise' } = decodeParams(params, ['mode']);
    if (!['raise', 'spin', 'allocate'].includes(mode)) throw new Error(`unknown mode '${mode}'`);
    this.mode = mode;
  }

  decide(req, candidates) {
    if (req.tags.some(([key, value]) => key === 'hostile' && value === 'go')) this.misbehave();
    const eligible = candidates.filter((c) => ineligibility(c, req) === null);
    if (eligible.length === 0) return noCapacity(req, candidates);
    return routeTo(eligible.slice(0, 1), `hostile (${this.mode}) behaving: ${eligible[0].name}`);
  }

  misbehave() {
    if (this.mode === 'raise') throw new Error('a JavaScript policy that throws');
    if (this.mode === 'spin') for (;;) {}
    if (this.mode === 'allocate') {
      const hoard = [];
      for (;;) hoard.push(new ArrayBuffer(1 << 20));
    }
  }
}

export const { configure, setCluster, route } = serve(Hostile);

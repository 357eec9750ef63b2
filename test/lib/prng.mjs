// mulberry32, seeded: every randomized test case is reproducible from its seed. One copy, the
// one the golden vectors are generated with (format/vectors/prng.ts; needs dist/ built).
export { prng } from '../../dist/format/vectors/prng.js';

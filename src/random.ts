/**
 * Seeded randomness, so initialisation, synthetic data and shuffles repeat exactly for a given seed
 * (Math.random cannot be seeded).
 */
export interface Random {
  /** Uniform in [0, 1). */
  uniform(): number;
  /** Standard normal. */
  normal(): number;
}

/** mulberry32 for uniforms, Box–Muller for normals. */
export function seededRandom(seed: number): Random {
  let state = seed >>> 0;
  let spare: number | undefined;
  const uniform = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return {
    uniform,
    normal() {
      if (spare !== undefined) {
        const value = spare;
        spare = undefined;
        return value;
      }
      const u = 1 - uniform();
      const angle = 2 * Math.PI * uniform();
      const radius = Math.sqrt(-2 * Math.log(u));
      spare = radius * Math.sin(angle);
      return radius * Math.cos(angle);
    },
  };
}

export function normalArray(random: Random, length: number, std: number): Float32Array {
  const out = new Float32Array(length);
  for (let i = 0; i < length; i++) out[i] = random.normal() * std;
  return out;
}

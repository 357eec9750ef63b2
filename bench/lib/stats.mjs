// Small statistics shared by the bench suites: every figure is a median with its spread, and
// every comparison is a ratio against the native limit measured in the same run.

export function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  const n = s.length;
  if (!n) return NaN;
  return n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2;
}

/** Nearest-rank percentile, p in 0..100. */
export function percentile(xs, p) {
  const s = [...xs].sort((a, b) => a - b);
  if (!s.length) return NaN;
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))];
}

/** Median and spread: the largest deviation of one sample from the median, relative to it. */
export function summarize(xs) {
  const med = median(xs);
  const spread = med ? Math.max(...xs.map((x) => Math.abs(x - med))) / med : 0;
  return { median: med, spread, min: Math.min(...xs), max: Math.max(...xs), n: xs.length };
}

/**
 * Ratio of samples to the native samples of the same rounds: the median of per-round ratios
 * (rounds run seconds apart, so a shared host's slow drifts cancel), with the spread of those
 * ratios. Falls back to the ratio of medians when the rounds do not pair up.
 */
export function pairedRatio(xs, native) {
  if (xs.length === native.length && xs.length && native.every((v) => v > 0)) {
    return summarize(xs.map((x, i) => x / native[i]));
  }
  return { median: median(xs) / median(native), spread: NaN, n: 0 };
}

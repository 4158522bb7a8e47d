/**
 * Per-system token buckets: `rate` records per second with a burst of two seconds' worth. Defaults are
 * high (DESIGN §3.3) so a bucket stops a runaway system, not normal load.
 */
export class RateLimiter {
  private readonly buckets = new Map<string, { tokens: number; at: number }>()

  constructor(private readonly now: () => number = Date.now) {}

  /** Whether `n` records fit in `key`'s bucket now. Does not consume. */
  check(key: string, n: number, rate: number): boolean {
    return this.fill(key, rate).tokens >= n
  }

  take(key: string, n: number, rate: number): void {
    this.fill(key, rate).tokens -= n
  }

  private fill(key: string, rate: number): { tokens: number; at: number } {
    const t = this.now()
    const burst = rate * 2
    let b = this.buckets.get(key)
    if (!b) {
      b = { tokens: burst, at: t }
      this.buckets.set(key, b)
    } else {
      b.tokens = Math.min(burst, b.tokens + ((t - b.at) / 1000) * rate)
      b.at = t
    }
    return b
  }
}

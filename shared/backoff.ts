/**
 * Capped exponential backoff with full jitter (delay = random(0, min(cap, base·2^attempt))), which
 * spreads reconnecting peers apart instead of letting them retry in lock-step. `reset()` after a healthy
 * session so a link that was fine for a while retries quickly.
 */
export interface BackoffOptions { baseMs: number; maxMs: number; random?: () => number }

export class Backoff {
  private attempt = 0
  constructor(private readonly opts: BackoffOptions) {}

  next(): number {
    const ceiling = Math.min(this.opts.maxMs, this.opts.baseMs * 2 ** Math.min(this.attempt, 30))
    this.attempt++
    const r = (this.opts.random ?? Math.random)()
    return Math.max(1, Math.floor(r * ceiling))
  }

  reset(): void {
    this.attempt = 0
  }

  get attempts(): number {
    return this.attempt
  }
}

/** One full-jitter delay for retry number `attempt` (0-based): random(0, min(maxMs, baseMs·2^attempt)), at least 1 ms. */
export function fullJitterDelay(attempt: number, opts: BackoffOptions): number {
  const ceiling = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(Math.max(0, attempt), 30))
  return Math.max(1, Math.floor((opts.random ?? Math.random)() * ceiling))
}

/**
 * One delivery attempt of a user's action to its business system (DESIGN §3.6): the JSON body is POSTed
 * to the system's registered `--callback` URL with
 *
 *   X-Todo-Signature: sha256=<lowercase hex HMAC-SHA256 of the raw body bytes, keyed with the auth code's
 *                     32 ASCII characters>
 *
 * so the business system can check, with the code it already holds, that the call comes from its todo
 * center and that the body was not altered (RFC 2104 HMAC). Redirects are not followed.
 */
import { createHmac } from 'node:crypto'
import { Agent, request } from 'undici'

export const SIGNATURE_HEADER = 'x-todo-signature'
export const ACTION_ID_HEADER = 'x-todo-action-id'
export const ATTEMPT_HEADER = 'x-todo-attempt'

/** The callback's body, in this key order. `ref` and `payload` only when the client sent them. */
export interface CallbackBody {
  id: string
  system: string
  systemName: string
  user: string
  type: string
  ref?: string
  payload?: unknown
  /** When the user submitted the action, ms since 1970. */
  ts: number
}

export function callbackBodyText(b: CallbackBody): string {
  const o: Record<string, unknown> = { id: b.id, system: b.system, systemName: b.systemName, user: b.user, type: b.type }
  if (b.ref !== undefined) o.ref = b.ref
  if (b.payload !== undefined) o.payload = b.payload
  o.ts = b.ts
  return JSON.stringify(o)
}

/** `sha256=<hex>`: HMAC-SHA256 of the exact body bytes, keyed with the auth code as ASCII. */
export function signCallback(body: string | Uint8Array, authCode: string): string {
  return `sha256=${createHmac('sha256', Buffer.from(authCode, 'ascii')).update(body).digest('hex')}`
}

export type CallbackOutcome =
  | { ok: true; status: number }
  | { ok: false; retryable: boolean; status?: number; reason: string }

/**
 * Whether a failed attempt is worth repeating: network errors, timeouts, 408, 425, 429 and 5xx are; a
 * redirect or another 4xx means the system refuses this request and will do so again.
 */
export function retryableStatus(status: number): boolean {
  return status >= 500 || status === 408 || status === 425 || status === 429
}

export function createCallbackAgent(timeoutMs: number): Agent {
  return new Agent({ connect: { timeout: timeoutMs }, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, keepAliveTimeout: 4000 })
}

/** Makes one attempt. Never throws: every failure becomes an outcome with a reason (no secrets in it). */
export async function postCallback(opts: {
  agent: Agent
  url: string
  body: string
  signature: string
  actionId: string
  attempt: number
  signal: AbortSignal
}): Promise<CallbackOutcome> {
  try {
    const res = await request(opts.url, {
      method: 'POST',
      dispatcher: opts.agent,
      signal: opts.signal,
      body: opts.body,
      headers: {
        'content-type': 'application/json; charset=utf-8',
        'user-agent': 'todo-relay',
        [SIGNATURE_HEADER]: opts.signature,
        [ACTION_ID_HEADER]: opts.actionId,
        [ATTEMPT_HEADER]: String(opts.attempt),
      },
    })
    // The answer's body is not used; read and drop it so the connection can be reused.
    await res.body.dump({ limit: 64 * 1024 }).catch(() => undefined)
    if (res.statusCode >= 200 && res.statusCode < 300) return { ok: true, status: res.statusCode }
    return { ok: false, retryable: retryableStatus(res.statusCode), status: res.statusCode, reason: `callback answered HTTP ${res.statusCode}` }
  } catch (e) {
    const err = e as { code?: string; name?: string; cause?: { code?: string } }
    const code = err.cause?.code ?? err.code ?? err.name ?? 'error'
    return { ok: false, retryable: true, reason: `callback unreachable (${code})` }
  }
}

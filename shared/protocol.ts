/**
 * Every frame of the link (inner → outer, province → city) and of the client API, with its validator,
 * plus the protocol version and close codes. No frame type is declared anywhere else.
 *
 * Validators parse, they do not cast: each takes `unknown` (the result of JSON.parse) and returns the typed
 * frame or a reason string. Link frames after the handshake travel sealed: `{"s": sig, "b": bodyText}`
 * where `s` signs `FRAME_CONTEXT + sessionId + "\n" + bodyText`, so one verify covers the whole frame
 * and the signed bytes are exactly the bytes received (no re-canonicalisation on the hot path).
 */

export const PROTOCOL_VERSION = 1

/** Context strings bound into every signature so a signature of one kind can never pass as another. */
export const AUTH_CONTEXT = 'todo-relay/link/v1/auth'
export const WELCOME_CONTEXT = 'todo-relay/link/v1/welcome'
export const FRAME_CONTEXT = 'todo-relay/link/v1/frame\n'

/** WebSocket close codes (RFC 6455 §7.4.2 leaves 4000–4999 to applications). */
export const CLOSE = {
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL: 4000,
  UNKNOWN_KEY: 4001,
  BAD_SIGNATURE: 4002,
  REPLAY: 4003,
  SEQUENCE: 4004,
  REPLACED: 4005,
  HANDSHAKE_TIMEOUT: 4006,
  UNAUTHORIZED: 4401,
  TOO_MANY: 4429,
  SLOW_CONSUMER: 4008,
  INTERNAL: 1011,
} as const

// ---------------------------------------------------------------------------------------------------
// Envelope (DESIGN §3.5)
// ---------------------------------------------------------------------------------------------------

/** A todo count as signed by its center. Clients receive exactly this object, nothing added inside. */
export interface Envelope {
  /** Gap-free position in the center's sequence. */
  seq: number
  /** Message id, unique across epochs. */
  id: string
  /** Public system id (never the auth code). */
  system: string
  systemName: string
  /** Login name. */
  user: string
  level: 1 | 2 | 3
  /** The user's open items in that system now (a snapshot, not a delta). */
  quantity: number
  url: string
  /** Milliseconds since 1970 when the center stored it. */
  ts: number
  /** centerId of the signing center. */
  center: string
  /** base64 ed25519 signature over the JCS canonical JSON of the other fields. */
  sig: string
}

export type UnsignedEnvelope = Omit<Envelope, 'sig'>

export const ENVELOPE_KEYS = ['seq', 'id', 'system', 'systemName', 'user', 'level', 'quantity', 'url', 'ts', 'center', 'sig'] as const

/**
 * The largest values an envelope may carry (lengths in UTF-16 code units, as String#length counts). Every
 * receiver refuses more, so the inner's intake limits may be lowered but never raised above these: a
 * record accepted beyond them would be stored and then refused by the outer in every batch, forever.
 */
export const ENVELOPE_LIMITS = { user: 128, systemName: 256, url: 2048, quantity: 1_000_000_000 } as const

type Result<T> = T | string

const isObj = (x: unknown): x is Record<string, unknown> => typeof x === 'object' && x !== null && !Array.isArray(x)
const isInt = (x: unknown, min = 0, max = Number.MAX_SAFE_INTEGER): x is number =>
  typeof x === 'number' && Number.isInteger(x) && x >= min && x <= max
const isStr = (x: unknown, max = 4096): x is string => typeof x === 'string' && x.length <= max
const isNonEmpty = (x: unknown, max = 4096): x is string => isStr(x, max) && x.length > 0

export function validateEnvelope(x: unknown): Result<Envelope> {
  if (!isObj(x)) return 'envelope must be an object'
  for (const k of Object.keys(x)) if (!(ENVELOPE_KEYS as readonly string[]).includes(k)) return `envelope has unknown key ${k}`
  if (!isInt(x.seq, 1)) return 'envelope.seq'
  if (!isNonEmpty(x.id, 64)) return 'envelope.id'
  if (!isNonEmpty(x.system, 64)) return 'envelope.system'
  if (!isStr(x.systemName, ENVELOPE_LIMITS.systemName)) return 'envelope.systemName'
  if (!isNonEmpty(x.user, ENVELOPE_LIMITS.user)) return 'envelope.user'
  if (x.level !== 1 && x.level !== 2 && x.level !== 3) return 'envelope.level'
  if (!isInt(x.quantity, 0, ENVELOPE_LIMITS.quantity)) return 'envelope.quantity'
  if (!isStr(x.url, ENVELOPE_LIMITS.url)) return 'envelope.url'
  if (!isInt(x.ts, 0)) return 'envelope.ts'
  if (!isNonEmpty(x.center, 64)) return 'envelope.center'
  if (!isStr(x.sig, 88) || x.sig.length !== 88) return 'envelope.sig'
  return x as unknown as Envelope
}

// ---------------------------------------------------------------------------------------------------
// Link handshake (plain JSON, before a session exists)
// ---------------------------------------------------------------------------------------------------

/** Server (outer, or a city inner's upstream listener) → dialer, first frame on every connection. */
export interface HelloFrame { t: 'hello'; v: number; key: string; nonce: string }
/** Dialer → server: proves possession of the dialer's key over both nonces and both keys. */
export interface AuthFrame { t: 'auth'; v: number; key: string; nonce: string; center: string; epoch: string; sig: string }
/** Server → dialer: proves the server's key, and says where to resume. */
export interface WelcomeFrame { t: 'welcome'; v: number; sig: string; epoch: string | null; hw: number | null }
/** Either side, just before closing: why. */
export interface ErrorFrame { t: 'error'; code: string; msg: string }

export type HandshakeFrame = HelloFrame | AuthFrame | WelcomeFrame | ErrorFrame

const NONCE_LEN = 44 // base64 of 32 bytes
const KEY_LEN = 44

export function validateHandshake(x: unknown): Result<HandshakeFrame> {
  if (!isObj(x)) return 'frame must be an object'
  switch (x.t) {
    case 'hello':
      if (!isInt(x.v, 1)) return 'hello.v'
      if (!isStr(x.key, KEY_LEN) || x.key.length !== KEY_LEN) return 'hello.key'
      if (!isStr(x.nonce, NONCE_LEN) || x.nonce.length !== NONCE_LEN) return 'hello.nonce'
      return x as unknown as HelloFrame
    case 'auth':
      if (!isInt(x.v, 1)) return 'auth.v'
      if (!isStr(x.key, KEY_LEN) || x.key.length !== KEY_LEN) return 'auth.key'
      if (!isStr(x.nonce, NONCE_LEN) || x.nonce.length !== NONCE_LEN) return 'auth.nonce'
      if (!isNonEmpty(x.center, 64)) return 'auth.center'
      if (!isNonEmpty(x.epoch, 64)) return 'auth.epoch'
      if (!isStr(x.sig, 88)) return 'auth.sig'
      return x as unknown as AuthFrame
    case 'welcome':
      if (!isInt(x.v, 1)) return 'welcome.v'
      if (!isStr(x.sig, 88)) return 'welcome.sig'
      if (x.epoch !== null && !isNonEmpty(x.epoch, 64)) return 'welcome.epoch'
      if (x.hw !== null && !isInt(x.hw, 0)) return 'welcome.hw'
      return x as unknown as WelcomeFrame
    case 'error':
      if (!isStr(x.code, 64) || !isStr(x.msg, 1024)) return 'error frame'
      return x as unknown as ErrorFrame
    default:
      return `unknown handshake frame ${String(x.t).slice(0, 32)}`
  }
}

/** The object the dialer signs in `auth` (and, with WELCOME_CONTEXT plus epoch/hw, the server in `welcome`). */
export function authSignedObject(a: { serverKey: string; serverNonce: string; clientKey: string; clientNonce: string; center: string; epoch: string }): Record<string, string> {
  return { ctx: AUTH_CONTEXT, ...a }
}

export function welcomeSignedObject(a: { serverKey: string; serverNonce: string; clientKey: string; clientNonce: string; epoch: string | null; hw: number | null }): Record<string, unknown> {
  return { ctx: WELCOME_CONTEXT, ...a }
}

// ---------------------------------------------------------------------------------------------------
// Sealed link frames (after the handshake)
// ---------------------------------------------------------------------------------------------------

/** The wire wrapper: `s` = base64 signature, `b` = body JSON text. */
export interface Sealed { s: string; b: string }

export function validateSealed(x: unknown, maxBody: number): Result<Sealed> {
  if (!isObj(x)) return 'sealed frame must be an object'
  if (!isStr(x.s, 88) || x.s.length !== 88) return 'sealed.s'
  if (!isStr(x.b, maxBody)) return 'sealed.b'
  return x as unknown as Sealed
}

/** inner → outer: new messages, seq strictly increasing and contiguous with the outer's high-water mark. */
export interface BatchBody { t: 'batch'; n: number; epoch: string; items: Envelope[] }
/**
 * inner → outer: a chunk of a full resynchronisation (the outer's epoch differs, or its high-water mark is
 * older than what the inner still holds). `first` wipes the outer's replica in the same transaction that
 * stores the chunk; `done` sets its high-water mark to `hw`. Items hold the latest envelope per (system, user).
 */
export interface ResyncBody { t: 'resync'; n: number; epoch: string; first: boolean; done: boolean; hw: number; items: Envelope[] }
/**
 * inner → outer: an action's status changed (DESIGN §3.6); also the inner's answer to an `action` it
 * already holds (the outer resends unfinished actions on every new session, which is how a status lost
 * while the link was down reaches the outer). `code` is a stable `E_ACTION_*`/`E_CALLBACK` code when
 * `status` is `failed`; `error` says why in words.
 */
export interface ActionStatusBody { t: 'action-status'; n: number; id: string; status: ActionStatus; code?: string; error?: string }
/** outer → inner: the highest seq the outer has committed. */
export interface AckBody { t: 'ack'; n: number; epoch: string; seq: number }
/** outer → inner: delivery and read receipts from clients. */
export interface ReceiptsBody { t: 'receipts'; n: number; rid: number; items: Receipt[] }
/** inner → outer: receipts up to `rid` are committed at the inner. */
export interface ReceiptsAckBody { t: 'receipts-ack'; n: number; rid: number }
/** outer → inner: a user's action, with the user's token for the inner to verify itself. */
export interface ActionBody { t: 'action'; n: number; action: LinkAction }

export type InnerToOuter = BatchBody | ResyncBody | ActionStatusBody | ReceiptsAckBody
export type OuterToInner = AckBody | ReceiptsBody | ActionBody

export interface Receipt { seq: number; user: string; kind: 'delivered' | 'read'; ts: number }
export type ActionStatus = 'queued' | 'forwarded' | 'delivered' | 'failed'
export interface LinkAction {
  id: string; system: string; user: string; type: string; ref?: string; payload?: unknown; ts: number; token: string
}

export const MAX_BATCH_ITEMS = 1000

function validateItems(x: unknown, what: string): Result<Envelope[]> {
  if (!Array.isArray(x) || x.length > MAX_BATCH_ITEMS) return `${what}.items`
  for (const it of x) {
    const r = validateEnvelope(it)
    if (typeof r === 'string') return `${what}: ${r}`
  }
  return x as Envelope[]
}

export function validateInnerToOuter(x: unknown): Result<InnerToOuter> {
  if (!isObj(x)) return 'body must be an object'
  if (!isInt(x.n, 1)) return 'body.n'
  switch (x.t) {
    case 'batch': {
      if (!isNonEmpty(x.epoch, 64)) return 'batch.epoch'
      const items = validateItems(x.items, 'batch')
      if (typeof items === 'string') return items
      if (items.length === 0) return 'batch.items empty'
      for (let i = 1; i < items.length; i++) if (items[i]!.seq !== items[i - 1]!.seq + 1) return 'batch seq not contiguous'
      return x as unknown as BatchBody
    }
    case 'resync': {
      if (!isNonEmpty(x.epoch, 64)) return 'resync.epoch'
      if (typeof x.first !== 'boolean' || typeof x.done !== 'boolean') return 'resync.first/done'
      if (!isInt(x.hw, 0)) return 'resync.hw'
      const items = validateItems(x.items, 'resync')
      if (typeof items === 'string') return items
      return x as unknown as ResyncBody
    }
    case 'action-status':
      if (!isNonEmpty(x.id, 64)) return 'action-status.id'
      if (!['queued', 'forwarded', 'delivered', 'failed'].includes(x.status as string)) return 'action-status.status'
      if (x.code !== undefined && !isNonEmpty(x.code, 64)) return 'action-status.code'
      if (x.error !== undefined && !isStr(x.error, 1024)) return 'action-status.error'
      return x as unknown as ActionStatusBody
    case 'receipts-ack':
      if (!isInt(x.rid, 0)) return 'receipts-ack.rid'
      return x as unknown as ReceiptsAckBody
    default:
      return `unknown frame ${String(x.t).slice(0, 32)}`
  }
}

export const MAX_ACTION_BYTES = 16 * 1024

export function validateLinkAction(x: unknown): Result<LinkAction> {
  if (!isObj(x)) return 'action must be an object'
  if (!isNonEmpty(x.id, 64)) return 'action.id'
  if (!isNonEmpty(x.system, 64)) return 'action.system'
  if (!isNonEmpty(x.user, 128)) return 'action.user'
  if (!isNonEmpty(x.type, 32) || !/^[a-z][a-z0-9_-]*$/.test(x.type)) return 'action.type'
  if (x.ref !== undefined && !isStr(x.ref, 256)) return 'action.ref'
  if (!isInt(x.ts, 0)) return 'action.ts'
  if (!isNonEmpty(x.token, 8192)) return 'action.token'
  if (x.payload !== undefined && JSON.stringify(x.payload).length > MAX_ACTION_BYTES) return 'action.payload'
  return x as unknown as LinkAction
}

export function validateOuterToInner(x: unknown): Result<OuterToInner> {
  if (!isObj(x)) return 'body must be an object'
  if (!isInt(x.n, 1)) return 'body.n'
  switch (x.t) {
    case 'ack':
      if (!isNonEmpty(x.epoch, 64)) return 'ack.epoch'
      if (!isInt(x.seq, 0)) return 'ack.seq'
      return x as unknown as AckBody
    case 'receipts': {
      if (!isInt(x.rid, 1)) return 'receipts.rid'
      if (!Array.isArray(x.items) || x.items.length > 10_000) return 'receipts.items'
      for (const r of x.items) {
        if (!isObj(r) || !isInt(r.seq, 1) || !isNonEmpty(r.user, 128) || (r.kind !== 'delivered' && r.kind !== 'read') || !isInt(r.ts, 0)) {
          return 'receipts.item'
        }
      }
      return x as unknown as ReceiptsBody
    }
    case 'action': {
      const a = validateLinkAction(x.action)
      if (typeof a === 'string') return a
      return x as unknown as ActionBody
    }
    default:
      return `unknown frame ${String(x.t).slice(0, 32)}`
  }
}

// ---------------------------------------------------------------------------------------------------
// Client frames (DESIGN §3.6), over /ws on the outer (mobile) and the inner's portal listener (PC)
// ---------------------------------------------------------------------------------------------------

export interface SnapshotFrame {
  t: 'snapshot'; user: string; epoch: string; seq: number; total: number; items: Envelope[]; reset?: true
}
export interface UpdateFrame { t: 'update'; item: Envelope }
export interface SyncedFrame { t: 'synced'; seq: number }
/** An action's status: the reply to a `/ws` action frame, then one frame per change. `code` as in ActionStatusBody. */
export interface ActionFrame { t: 'action'; id: string; status: ActionStatus; code?: string; error?: string }
export interface ClientErrorFrame { t: 'error'; code: string; msg: string }
export type ServerToClient = SnapshotFrame | UpdateFrame | SyncedFrame | ActionFrame | ClientErrorFrame

export interface ClientAck { t: 'ack'; seq: number }
export interface ClientRead { t: 'read'; seq: number }
export interface ClientAction { t: 'action'; system: string; type: string; ref?: string; payload?: unknown }
export interface ClientPing { t: 'ping' }
export type ClientToServer = ClientAck | ClientRead | ClientAction | ClientPing

export function validateClientFrame(x: unknown): Result<ClientToServer> {
  if (!isObj(x)) return 'frame must be an object'
  switch (x.t) {
    case 'ack':
    case 'read':
      if (!isInt(x.seq, 1)) return `${x.t}.seq`
      return x as unknown as ClientAck | ClientRead
    case 'action': {
      const r = validateActionRequest(x)
      return typeof r === 'string' ? r : { t: 'action', ...r }
    }
    case 'ping':
      return { t: 'ping' }
    default:
      return `unknown frame ${String(x.t).slice(0, 32)}`
  }
}

/** Body of `POST /api/v1/actions` (and the `/ws` action frame). */
export interface ActionRequest { system: string; type: string; ref?: string; payload?: unknown }

export function validateActionRequest(x: unknown): Result<ActionRequest> {
  if (!isObj(x)) return 'body must be an object'
  if (!isNonEmpty(x.system, 64)) return 'system'
  if (!isNonEmpty(x.type, 32) || !/^[a-z][a-z0-9_-]*$/.test(x.type)) return 'type'
  if (x.ref !== undefined && !isStr(x.ref, 256)) return 'ref'
  if (x.payload !== undefined && JSON.stringify(x.payload).length > MAX_ACTION_BYTES) return 'payload'
  const out: ActionRequest = { system: x.system, type: x.type }
  if (x.ref !== undefined) out.ref = x.ref as string
  if (x.payload !== undefined) out.payload = x.payload
  return out
}

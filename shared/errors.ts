/**
 * The one table of error codes. `E_…` codes are the intake/client API's wire codes (DESIGN §3.3) and
 * carry an HTTP status plus a Chinese and an English message; `ERR_<AREA>_<WHAT>` codes are internal
 * (config, link, CLI) and reach operators through logs and command-line errors.
 *
 * Throw by code, test by code: `throw new RelayError('E_FIELD', { field: 'QUANTITY' })`.
 */

export interface ErrorSpec {
  /** HTTP status where the error reaches an HTTP client; 500 for internal ones. */
  readonly status: number
  readonly zh: string
  readonly en: string
}

export const ERRORS = {
  // ---- intake API (DESIGN §3.3) ----
  E_BAD_JSON: { status: 400, zh: '请求体不是合法的 JSON', en: 'body is not valid JSON' },
  E_ENCODING: { status: 400, zh: '请求体不是合法的 UTF-8 编码', en: 'body is not valid UTF-8 (send UTF-8, percent-encoded in forms)' },
  E_FIELD: { status: 400, zh: '字段不合法', en: 'invalid field' },
  E_EMPTY_BATCH: { status: 400, zh: '批量消息不能为空', en: 'a batch must hold at least one record' },
  E_BATCH_TOO_LARGE: { status: 400, zh: '批量消息条数超出上限', en: 'too many records in one batch' },
  E_TOO_DEEP: { status: 400, zh: 'JSON 嵌套层数过深', en: 'JSON nested too deeply' },
  E_AUTH_CODE: { status: 401, zh: '授权码无效', en: 'unknown or expired auth code (BUSSINESS)' },
  E_IP_DENIED: { status: 403, zh: '来源地址不在该系统的白名单内', en: 'client address not allowed for this system' },
  E_SYSTEM_DISABLED: { status: 403, zh: '业务系统已停用', en: 'business system is disabled' },
  E_NOT_FOUND: { status: 404, zh: '接口不存在', en: 'no such endpoint' },
  E_METHOD: { status: 405, zh: '请求方法不允许', en: 'method not allowed' },
  E_TOO_LARGE: { status: 413, zh: '请求体过大', en: 'request body too large' },
  E_CONTENT_TYPE: { status: 415, zh: '不支持的 Content-Type', en: 'unsupported content type' },
  E_RATE: { status: 429, zh: '请求过于频繁，请稍后再试', en: 'rate limit exceeded for this system' },
  E_STORAGE: { status: 503, zh: '存储暂时不可用，消息未保存，请重试', en: 'storage unavailable; nothing was stored, retry' },
  E_SHUTTING_DOWN: { status: 503, zh: '服务正在停止，请重试', en: 'server is shutting down; retry' },
  E_CLIENT_ABORTED: { status: 400, zh: '客户端在请求体发送完之前断开了连接', en: 'the client closed the connection before the body was complete' },
  E_INTERNAL: { status: 500, zh: '服务器内部错误', en: 'internal error' },

  // ---- client API (DESIGN §3.6) ----
  E_UNAUTHORIZED: { status: 401, zh: '令牌无效或已过期', en: 'missing, invalid or expired token' },
  E_TOO_MANY_CONNECTIONS: { status: 429, zh: '该用户的连接数已达上限', en: 'too many connections for this user' },
  E_ORIGIN: { status: 403, zh: '来源站点不被允许', en: 'origin not allowed' },
  E_TOO_MANY_ACTIONS: { status: 429, zh: '未完成的办理请求过多，请稍后再试', en: 'too many unfinished actions for this user' },

  // ---- actions (DESIGN §3.6): why an action ended `failed`, in its `code` ----
  E_ACTION_TOKEN: { status: 401, zh: '办理请求的令牌无效、已过期或与用户不符', en: 'the action\'s token is invalid, expired beyond the queueing grace, or not the user\'s' },
  E_ACTION_SYSTEM: { status: 404, zh: '业务系统不存在或已停用', en: 'no such business system, or it is disabled' },
  E_ACTION_NO_CALLBACK: { status: 409, zh: '该业务系统未登记回调地址', en: 'the business system has no callback URL' },
  E_ACTION_TYPE: { status: 422, zh: '该业务系统不接受此类办理', en: 'action type not allowed for this system' },
  E_ACTION_TOO_LARGE: { status: 413, zh: '办理请求过大', en: 'action too large' },
  E_CALLBACK: { status: 502, zh: '业务系统回调失败', en: 'the business system\'s callback failed' },

  // ---- config ----
  ERR_CONFIG_READ: { status: 500, zh: '无法读取配置文件', en: 'cannot read config file' },
  ERR_CONFIG_INVALID: { status: 500, zh: '配置不合法', en: 'invalid configuration' },
  ERR_KEY_FILE: { status: 500, zh: '密钥文件不合法', en: 'invalid key file' },

  // ---- link (DESIGN §3.4) ----
  ERR_LINK_PROTOCOL: { status: 500, zh: '链路协议错误', en: 'link protocol violation' },
  ERR_LINK_UNKNOWN_KEY: { status: 500, zh: '未知的对端公钥', en: 'peer key is not pinned' },
  ERR_LINK_BAD_SIGNATURE: { status: 500, zh: '签名校验失败', en: 'bad signature' },
  ERR_LINK_REPLAY: { status: 500, zh: '重放的握手', en: 'replayed handshake nonce' },
  ERR_LINK_SEQUENCE: { status: 500, zh: '序号不连续', en: 'sequence gap or out-of-order frame' },

  // ---- CLI / registry ----
  ERR_CLI_USAGE: { status: 500, zh: '命令参数错误', en: 'bad command-line usage' },
  ERR_SYSTEM_NOT_FOUND: { status: 404, zh: '业务系统不存在', en: 'no such business system' },
  ERR_SYSTEM_EXISTS: { status: 409, zh: '业务系统名称已存在', en: 'a system with this name exists' },
  ERR_MESSAGE_NOT_FOUND: { status: 404, zh: '消息不存在', en: 'no such message' },
  ERR_SYSTEM_REMOVING: { status: 409, zh: '业务系统正在删除', en: 'the system is being removed' },
  ERR_USER_IMPORT: { status: 500, zh: '用户导入文件不合法', en: 'invalid user import file' },

  // ---- poller (pull-user / pull-all): stored as a system's last poll error ----
  ERR_POLL_CONNECT: { status: 502, zh: '无法连接业务系统', en: 'cannot connect to the business system' },
  ERR_POLL_TIMEOUT: { status: 504, zh: '业务系统响应超时', en: 'the business system did not answer in time' },
  ERR_POLL_HTTP: { status: 502, zh: '业务系统返回了非 200 状态', en: 'the business system answered with a status other than 200' },
  ERR_POLL_TOO_LARGE: { status: 502, zh: '业务系统返回的数据过大', en: 'the answer exceeds poll.maxResponseBytes' },
  ERR_POLL_ENCODING: { status: 502, zh: '业务系统返回的数据编码不合法', en: 'the answer is not valid text in its declared charset (UTF-8 by default)' },
  ERR_POLL_BAD_JSON: { status: 502, zh: '业务系统返回的数据不是合法的 JSON', en: 'the answer is not valid JSON' },
  ERR_POLL_SHAPE: { status: 502, zh: '业务系统返回的数据格式不符合规范', en: 'the answer has the wrong shape (pull-all: a JSON array; pull-user: a JSON object or array)' },
} as const satisfies Record<string, ErrorSpec>

export type ErrorCode = keyof typeof ERRORS

/** An error with a stable code from {@link ERRORS}; `detail` is safe to show (never secrets). */
export class RelayError extends Error {
  readonly code: ErrorCode
  readonly status: number
  readonly detail: Record<string, unknown> | undefined

  constructor(code: ErrorCode, detail?: Record<string, unknown>, message?: string) {
    const spec = ERRORS[code]
    super(message ?? describe(code, detail))
    this.name = 'RelayError'
    this.code = code
    this.status = spec.status
    this.detail = detail
  }
}

function describe(code: ErrorCode, detail: Record<string, unknown> | undefined): string {
  const spec = ERRORS[code]
  const why = detail?.reason ?? detail?.field
  return why === undefined ? spec.en : `${spec.en}: ${String(why)}`
}

/** The wire body for an API error: `{"code","msg"}` with `msg` as "中文 (English)". */
export function errorBody(err: RelayError): { code: ErrorCode; msg: string; field?: string } {
  const spec = ERRORS[err.code]
  const field = typeof err.detail?.field === 'string' ? err.detail.field : undefined
  const reason = typeof err.detail?.reason === 'string' ? err.detail.reason : undefined
  const zh = field ? `${spec.zh}：${field}` : spec.zh
  const en = reason ? `${spec.en}: ${reason}` : field ? `${spec.en}: ${field}` : spec.en
  return field ? { code: err.code, msg: `${zh} (${en})`, field } : { code: err.code, msg: `${zh} (${en})` }
}

export function isRelayError(e: unknown): e is RelayError {
  return e instanceof RelayError
}

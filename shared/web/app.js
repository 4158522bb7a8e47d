/*
 * 待办中心 client page (DESIGN §3.6). Plain ES2020 without modules or a build step, served as-is by
 * todo-outer (环保通) and by the inner portal. Each envelope is verified in the browser against the inner's
 * ed25519 key (§3.5), so a compromised DMZ host can hide or alter counts but never without this page
 * flagging them. All URLs are relative so the page works behind a path prefix.
 */
'use strict'
;(function () {
  const $ = (id) => document.getElementById(id)
  const LEVELS = { 1: '重要', 2: '一般', 3: '不重要' }
  const ACTION_STATUS = { queued: '已排队', forwarded: '已转发', delivered: '已送达', failed: '失败' }
  const TOKEN_KEY = 'todo-relay.token'
  const CLOSE_UNAUTHORIZED = 4401 // shared/protocol.ts CLOSE.UNAUTHORIZED
  const BACKOFF_BASE_MS = 500
  const BACKOFF_MAX_MS = 30000
  const PING_MS = 25000 // keeps carrier NAT and proxies from dropping an idle socket
  const BAD_TOKEN_MSG = '登录令牌无效或已过期，请重新粘贴令牌。'

  const state = {
    token: null,
    innerKey: null, // Uint8Array(32) once GET api/v1/keys succeeded
    user: '',
    epoch: null, // with lastSeq, lets a reconnect resume instead of reloading everything
    lastSeq: 0,
    items: new Map(), // system → { env, ok }: one entry per system, the newest count wins
  }
  let ws = null, attempt = 0, retryTimer = null, pingTimer = null, running = false
  let session = 0 // bumped by every login/logout so a connect() still awaiting the key gives up

  // ---- encoding and verification (RFC 8785, RFC 8032) ------------------------------------------

  const b64ToBytes = (s) => Uint8Array.from(atob(s), (c) => c.charCodeAt(0))

  // RFC 8785 JCS. JSON.stringify already gives JCS output for strings (§3.2.2.2) and for finite numbers
  // (ECMAScript Number-to-String, §3.2.2.3); keys sort by UTF-16 code units, which is what the default
  // Array.prototype.sort compares (§3.2.3).
  function jcs(v) {
    if (v === null || typeof v === 'boolean' || typeof v === 'string') return JSON.stringify(v)
    if (typeof v === 'number' && Number.isFinite(v)) return JSON.stringify(v)
    if (Array.isArray(v)) return '[' + v.map(jcs).join(',') + ']'
    if (typeof v === 'object') {
      const keys = Object.keys(v).filter((k) => v[k] !== undefined).sort()
      return '{' + keys.map((k) => JSON.stringify(k) + ':' + jcs(v[k])).join(',') + '}'
    }
    throw new TypeError('JCS: cannot encode ' + String(v)) // NaN, Infinity, functions…
  }

  // True only for a good signature by the inner over exactly this envelope (minus sig) for this user:
  // a validly signed todo of someone else is still not "verified" here.
  function verify(env) {
    if (!state.innerKey || typeof env.sig !== 'string') return false
    try {
      const unsigned = Object.assign({}, env)
      delete unsigned.sig
      const msg = new TextEncoder().encode(jcs(unsigned))
      return nacl.sign.detached.verify(msg, b64ToBytes(env.sig), state.innerKey) && (!state.user || env.user === state.user)
    } catch (e) {
      return false // malformed base64 or wrong lengths: never verified
    }
  }

  function isEnvelope(e) {
    return e !== null && typeof e === 'object' && Number.isInteger(e.seq) && e.seq > 0 &&
      typeof e.system === 'string' && Number.isInteger(e.quantity)
  }

  // ---- state ------------------------------------------------------------------------------------

  // Applies one envelope; pushes its seq onto `shown` when the screen changes (to be acknowledged).
  function apply(env, shown) {
    if (!isEnvelope(env)) return
    const cur = state.items.get(env.system)
    if (cur && cur.env.seq >= env.seq) return // stale or duplicate (e.g. replayed after a resume)
    state.lastSeq = Math.max(state.lastSeq, env.seq)
    if (env.quantity <= 0) state.items.delete(env.system)
    else state.items.set(env.system, { env: env, ok: verify(env) })
    shown.push(env.seq)
  }

  function sorted() {
    const level = (e) => (LEVELS[e.level] ? e.level : 4)
    return Array.from(state.items.values()).sort((a, b) =>
      level(a.env) - level(b.env) ||
      String(a.env.systemName || a.env.system).localeCompare(String(b.env.systemName || b.env.system), 'zh-CN') ||
      (a.env.system < b.env.system ? -1 : 1))
  }

  // ---- rendering (textContent only: every string here comes from the network) --------------------

  function el(tag, cls, text) {
    const n = document.createElement(tag)
    if (cls) n.className = cls
    if (text !== undefined) n.textContent = text
    return n
  }

  function itemNode(it) {
    const e = it.env
    const li = el('li', 'todo')
    Object.assign(li.dataset, { seq: e.seq, system: e.system, verified: it.ok, level: e.level }) // as strings
    li.tabIndex = 0
    const top = el('div', 'row')
    top.append(el('span', 'name', e.systemName || e.system), el('span', 'badge', String(e.quantity)))
    const sub = el('div', 'row')
    sub.append(
      el('span', 'level level-' + e.level, LEVELS[e.level] || '未知'),
      it.ok ? el('span', 'sig-ok', '✓ 已验签 / verified') : el('span', 'sig-bad', '⚠ 验签失败 / NOT verified'),
    )
    const tail = el('span', 'tail') // time and button stay together at the right, also when the row wraps
    if (Number.isFinite(e.ts)) {
      tail.append(el('span', 'time', new Date(e.ts).toLocaleString('zh-CN', { month: 'numeric', day: 'numeric', hour: '2-digit', minute: '2-digit' })))
    }
    const handle = el('button', 'handle', '标记已办')
    handle.type = 'button'
    handle.addEventListener('click', (ev) => { ev.stopPropagation(); markHandled(e) }) // not an "open"
    tail.append(handle)
    sub.append(tail)
    li.append(top, sub)
    li.addEventListener('click', () => openItem(e, it.ok))
    li.addEventListener('keydown', (ev) => { if (ev.key === 'Enter') openItem(e, it.ok) })
    return li
  }

  function render() {
    const items = sorted()
    $('list').replaceChildren(...(items.length ? items.map(itemNode) : [el('li', 'empty', '暂无待办')]))
    $('total').textContent = String(items.reduce((s, it) => s + it.env.quantity, 0))
    $('user').textContent = state.user
    $('who').hidden = false
  }

  function setStatus(s) {
    const st = $('status')
    st.dataset.state = s
    st.textContent = { open: '已连接', connecting: '连接中…', closed: '已断开' }[s]
  }

  // Messages stack (newest last, at most 3) rather than replace each other: an action's status frame on
  // /ws may arrive before the reply to its POST, and neither should hide the other.
  function toast(msg, warn) {
    const box = $('toast')
    const n = el('div', warn ? 'toast-msg warn' : 'toast-msg', msg)
    box.append(n)
    while (box.children.length > 3) box.firstElementChild.remove()
    box.hidden = false
    setTimeout(() => { n.remove(); box.hidden = !box.children.length }, 4000)
  }

  // ---- user actions -----------------------------------------------------------------------------

  function send(frame) {
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(frame))
  }

  // Only http(s) is opened: a scheme-less url ("host/path") gets http:// and anything else
  // (javascript:, data:, …) fails to parse as an http URL and is refused.
  function openItem(e, ok) {
    // An item whose signature failed may come from a tampered server: its link is not followed.
    if (!ok) return toast('验签失败，已阻止打开该链接 (signature not verified; link blocked)', true)
    send({ t: 'read', seq: e.seq })
    const raw = String(e.url || '').trim()
    let u = null
    try { u = new URL(/^https?:\/\//i.test(raw) ? raw : 'http://' + raw) } catch (err) { u = null }
    if (!raw || !u || (u.protocol !== 'http:' && u.protocol !== 'https:')) return toast('该待办没有可打开的链接', true)
    window.open(u.href, '_blank', 'noopener,noreferrer')
  }

  async function markHandled(e) {
    try {
      const res = await fetch('api/v1/actions', {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: 'Bearer ' + state.token },
        body: JSON.stringify({ system: e.system, type: 'handle' }),
      })
      if (res.status === 401) return rejectToken()
      if (!res.ok) return toast('提交失败（' + res.status + '）', true)
      const body = await res.json()
      toast('「' + (e.systemName || e.system) + '」已提交：' + (ACTION_STATUS[body.status] || body.status))
    } catch (err) {
      toast('网络错误，提交失败', true)
    }
  }

  // ---- connection -------------------------------------------------------------------------------

  async function loadKey() {
    try {
      const res = await fetch('api/v1/keys', { cache: 'no-store' })
      if (res.status === 401) return rejectToken()
      const body = await res.json()
      const key = b64ToBytes(body.inner)
      if (key.length !== 32) throw new Error('bad key length')
      state.innerKey = key
      // Items shown before the key arrived were marked unverified; check them again now.
      for (const it of state.items.values()) it.ok = verify(it.env)
      if (state.items.size) render()
    } catch (err) {
      toast('无法获取验签公钥，待办将显示为验签失败', true)
    }
  }

  function wsUrl() {
    // Resolved against the page URL like "assets/…", so a path prefix carries over.
    const u = new URL('ws', location.href)
    u.protocol = u.protocol === 'https:' ? 'wss:' : 'ws:'
    u.searchParams.set('token', state.token)
    if (state.epoch !== null && state.lastSeq > 0) {
      u.searchParams.set('since', String(state.lastSeq))
      u.searchParams.set('epoch', state.epoch)
    }
    return u.href
  }

  // A refusal during the WebSocket handshake reaches the page only as a bare 1006, so ask REST whether
  // the token is the reason.
  async function tokenRefused() {
    try {
      return (await fetch('api/v1/todos', { headers: { authorization: 'Bearer ' + state.token } })).status === 401
    } catch (e) {
      return false
    }
  }

  async function connect() {
    retryTimer = null
    const mine = session
    if (!running) return
    setStatus('connecting')
    if (!state.innerKey) await loadKey()
    if (!running || mine !== session) return
    const sock = new WebSocket(wsUrl())
    let opened = false
    ws = sock
    sock.onmessage = (ev) => { if (ws === sock) onFrame(ev.data) }
    sock.onopen = () => {
      if (ws !== sock) return
      opened = true
      setStatus('open')
      pingTimer = setInterval(() => send({ t: 'ping' }), PING_MS)
    }
    sock.onclose = async (ev) => {
      if (ws !== sock) return
      ws = null
      clearInterval(pingTimer)
      setStatus('closed')
      const refused = ev.code === CLOSE_UNAUTHORIZED || (!opened && await tokenRefused())
      if (mine !== session) return
      if (refused) rejectToken()
      else scheduleReconnect()
    }
  }

  // Capped exponential backoff with full jitter (as shared/backoff.ts): random(0, min(cap, base·2^n)).
  function scheduleReconnect() {
    if (!running || retryTimer) return
    const ceiling = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** Math.min(attempt, 16))
    attempt++
    retryTimer = setTimeout(connect, Math.max(1, Math.floor(Math.random() * ceiling)))
  }

  function onFrame(data) {
    let f
    try { f = JSON.parse(data) } catch (e) { return }
    if (!f || typeof f !== 'object') return
    const shown = []
    switch (f.t) {
      case 'snapshot': // always the full state: replaces everything (also when reset:true after a failed resume)
        attempt = 0 // the server accepted us: a later drop starts again from a short delay
        state.user = typeof f.user === 'string' ? f.user : ''
        state.epoch = typeof f.epoch === 'string' ? f.epoch : null
        state.items.clear()
        state.lastSeq = 0
        for (const env of Array.isArray(f.items) ? f.items : []) apply(env, shown)
        if (Number.isInteger(f.seq)) state.lastSeq = Math.max(state.lastSeq, f.seq)
        break
      case 'update':
        apply(f.item, shown)
        break
      case 'synced':
        attempt = 0
        if (Number.isInteger(f.seq)) state.lastSeq = Math.max(state.lastSeq, f.seq)
        return
      case 'action':
        return toast('办理状态：' + (ACTION_STATUS[f.status] || f.status) + (f.error ? '（' + f.error + '）' : ''), f.status === 'failed')
      case 'error':
        return toast('服务器错误：' + (f.msg || f.code), true)
      default:
        return
    }
    render()
    // Delivery receipts go out only after the DOM shows the change.
    for (const seq of shown) send({ t: 'ack', seq: seq })
  }

  // ---- login ------------------------------------------------------------------------------------

  function stop() {
    running = false
    session++
    clearTimeout(retryTimer)
    clearInterval(pingTimer)
    const sock = ws
    ws = retryTimer = null
    if (sock) sock.close(1000)
    setStatus('closed')
  }

  function showLogin(msg) {
    $('login').hidden = false
    $('list').hidden = true
    $('who').hidden = true
    $('login-error').textContent = msg || ''
    $('login-error').hidden = !msg
    $('token-input').value = ''
    $('token-input').focus()
  }

  function rejectToken() {
    stop()
    sessionStorage.removeItem(TOKEN_KEY)
    showLogin(BAD_TOKEN_MSG)
  }

  function start(token) {
    state.token = token
    sessionStorage.setItem(TOKEN_KEY, token)
    // A new login is a new user: forget everything from the last one.
    Object.assign(state, { user: '', epoch: null, lastSeq: 0 })
    state.items.clear()
    $('login').hidden = true
    $('list').hidden = false
    running = true
    session++
    attempt = 0
    connect()
  }

  $('login-btn').addEventListener('click', () => {
    const tok = $('token-input').value.trim()
    if (tok) start(tok)
    else showLogin('请先粘贴登录令牌。')
  })
  $('logout').addEventListener('click', () => {
    stop()
    sessionStorage.removeItem(TOKEN_KEY)
    showLogin('')
  })
  // Back online: retry now rather than waiting out a long backoff.
  window.addEventListener('online', () => {
    if (running && retryTimer) { clearTimeout(retryTimer); connect() }
  })

  // ?token=JWT logs straight in (DESIGN §3.6); take it out of the address bar so it is not bookmarked,
  // shared or left in history.
  const params = new URLSearchParams(location.search)
  const fromUrl = params.get('token')
  if (fromUrl) {
    params.delete('token')
    const q = params.toString()
    history.replaceState(null, '', location.pathname + (q ? '?' + q : '') + location.hash)
  }
  const token = fromUrl || sessionStorage.getItem(TOKEN_KEY)
  if (token) start(token)
  else showLogin('')
})()

/*
 * todo-inner admin console (DESIGN §3.7). Plain ES2020 without modules or a build step. Polls api/stats
 * every 2 s while the tab is visible and traces messages through api/trace. Every value from the server
 * goes into the page as text (textContent, text nodes, attributes), never as HTML.
 */
'use strict'
;(function () {
  const REFRESH_MS = 2000
  const FETCH_TIMEOUT_MS = 10000
  const STAGES = [
    ['received', '接收'], ['stored', '入库'], ['forwarded', '转发'], ['acked', '外网确认'],
    ['delivered', '送达'], ['read', '已读'], ['superseded', '被替代'],
  ]
  const MODES = { push: '推送', 'pull-user': '按用户拉取', 'pull-all': '全量拉取' }
  const LINK_STATES = { up: '已连接', connecting: '连接中', down: '已断开', idle: '未启动', closed: '已关闭' }
  const SOURCES = { push: '推送', pull: '拉取', upstream: '上级' }
  const LATENCY = [
    ['receivedToStored', '接收 → 入库', 'received → stored'],
    ['storedToAcked', '入库 → 外网确认', 'stored → acked'],
    ['storedToDelivered', '入库 → 送达', 'stored → delivered'],
  ]

  const $ = (id) => document.getElementById(id)
  let timer = null
  let inflight = false
  let traced = null // the id or seq shown in the trace box, refreshed with the stats
  let systemNames = new Map()
  const rendered = {} // section → JSON of what it shows, so unchanged tables are left alone

  // ---- DOM helpers: text only -----------------------------------------------------------------

  /** el('td', { class: 'n', 'data-x': 1 }, 'text', childNode…) — strings become text nodes. */
  function el(tag, attrs) {
    const e = document.createElement(tag)
    if (attrs) for (const k of Object.keys(attrs)) if (attrs[k] !== undefined && attrs[k] !== null) e.setAttribute(k, String(attrs[k]))
    for (let i = 2; i < arguments.length; i++) {
      const c = arguments[i]
      if (c === undefined || c === null) continue
      e.append(typeof c === 'string' || typeof c === 'number' ? String(c) : c)
    }
    return e
  }

  function setText(id, v) {
    $(id).textContent = v === undefined || v === null ? '—' : String(v)
  }

  /** Replaces the children of `id` unless `data` is what it already shows. */
  function renderSection(id, data, build) {
    const key = JSON.stringify(data)
    if (rendered[id] === key) return
    rendered[id] = key
    $(id).replaceChildren(...build())
  }

  function emptyRow(cols, text) {
    return el('tr', null, el('td', { class: 'empty', colspan: cols }, text))
  }

  // ---- formatting -----------------------------------------------------------------------------

  const num = (n) => (typeof n === 'number' ? n.toLocaleString('zh-CN') : '—')
  const pad = (n, w) => String(n).padStart(w || 2, '0')

  function dateTime(ms) {
    if (ms === null || ms === undefined) return '—'
    const d = new Date(ms)
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`
  }

  function clock(ms) {
    const d = new Date(ms)
    return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${pad(d.getMilliseconds(), 3)}`
  }

  /** "12 秒前" against the server's clock, so a skewed browser clock does not mislead. */
  function ago(ms, now) {
    if (ms === null || ms === undefined) return '—'
    const s = Math.max(0, Math.round((now - ms) / 1000))
    if (s < 2) return '刚刚'
    if (s < 60) return `${s} 秒前`
    if (s < 3600) return `${Math.floor(s / 60)} 分钟前`
    if (s < 86400) return `${Math.floor(s / 3600)} 小时前`
    return `${Math.floor(s / 86400)} 天前`
  }

  /** A relative time; `refreshAges` keeps its text current without rebuilding its table. */
  function when(ms, now, future) {
    if (ms === null || ms === undefined) return '—'
    return el('span', { class: 'ago', 'data-at': ms, 'data-future': future ? 'true' : null, title: dateTime(ms) }, (future ? until : ago)(ms, now))
  }

  /** "8 秒后" for a time to come (the next poll). */
  function until(ms, now) {
    const s = Math.round((ms - now) / 1000)
    return s < 1 ? '即将' : s < 60 ? `${s} 秒后` : `${Math.round(s / 60)} 分钟后`
  }

  function refreshAges(now) {
    for (const e of document.querySelectorAll('.ago[data-at]')) {
      const text = (e.dataset.future ? until : ago)(Number(e.dataset.at), now)
      if (e.textContent !== text) e.textContent = text
    }
  }

  const msText = (v) => (v === null || v === undefined ? '—' : `${num(v)}`)

  // ---- fetching -------------------------------------------------------------------------------

  async function getJson(path) {
    const ctl = new AbortController()
    const t = setTimeout(() => ctl.abort(), FETCH_TIMEOUT_MS)
    try {
      const res = await fetch(path, { cache: 'no-store', signal: ctl.signal, headers: { accept: 'application/json' } })
      let body = null
      try { body = await res.json() } catch (e) { body = null }
      return { status: res.status, body }
    } finally {
      clearTimeout(t)
    }
  }

  function setRefresh(state, text) {
    const r = $('refresh')
    r.dataset.state = state
    r.textContent = text
  }

  async function refresh() {
    if (inflight) return
    inflight = true
    try {
      const { status, body } = await getJson('api/stats')
      if (status !== 200 || !body) throw new Error(`HTTP ${status}`)
      render(body)
      setRefresh('live', '自动刷新 · 2 秒')
      if (traced !== null) await showTrace(traced, true)
    } catch (e) {
      setRefresh('error', `刷新失败：${e && e.message ? e.message : String(e)}`)
    } finally {
      inflight = false
    }
  }

  function schedule() {
    clearTimeout(timer)
    timer = null
    if (document.hidden) {
      setRefresh('paused', '已暂停（页面不可见）')
      return
    }
    timer = setTimeout(async () => {
      await refresh()
      schedule()
    }, REFRESH_MS)
  }

  document.addEventListener('visibilitychange', () => {
    if (document.hidden) {
      schedule()
    } else {
      refresh().then(schedule)
    }
  })

  // ---- rendering the stats --------------------------------------------------------------------

  function render(s) {
    const now = s.now
    setText('updated', dateTime(now))
    setText('epoch', s.center.epoch)
    $('epoch').title = s.center.epoch
    setText('last-seq', num(s.center.lastSeq))
    for (const k of ['produced', 'rejected', 'forwarded', 'acked', 'delivered', 'read']) setText(`t-${k}`, num(s.totals[k]))
    systemNames = new Map(s.systems.map((x) => [x.id, x.name]))
    renderLinks(s.links, now)
    renderSystems(s.systems, s.totals, s.rejectedUnknownSystem, now)
    renderLatency(s.latency)
    renderErrors(s.errors, now)
    renderSystemOptions(s.systems)
    refreshAges(now)
  }

  function renderLinks(links, now) {
    renderSection('links', links, () => {
      if (links.length === 0) return [emptyRow(7, '未配置外网节点（outers 为空）')]
      return links.map((l) => el('tr', { 'data-peer': l.peer, 'data-state': l.state },
        el('td', { class: 'mono', title: l.publicKey }, l.peer),
        el('td', null, el('span', { class: 'pill link-state', 'data-state': l.state }, LINK_STATES[l.state] || l.state, ' ', el('small', null, l.state))),
        el('td', { class: 'mono url' }, l.url),
        el('td', { class: 'n' }, num(l.ackedSeq)),
        el('td', { class: 'n' + (l.backlog > 0 ? ' warn' : '') }, num(l.backlog)),
        el('td', null, when(l.connectedAt, now)),
        el('td', { class: 'err' }, l.lastError || ''),
      ))
    })
  }

  function pollCell(s, now) {
    if (s.mode === 'push') return el('td', { class: 'muted' }, '—')
    const p = s.poll
    if (!p) return el('td', { class: 'muted poll', 'data-poll': 'none' }, '尚未轮询')
    const state = p.consecutiveFailures > 0 ? 'failing' : 'ok'
    return el('td', { class: 'poll', 'data-poll': state },
      el('div', null, el('span', { class: 'pill', 'data-state': state }, state === 'ok' ? '正常' : `连续失败 ${p.consecutiveFailures} 次`)),
      el('div', null, '上次成功 ', when(p.lastSuccessAt, now), p.latencyMs === null ? '' : ` · 延迟 ${num(p.latencyMs)} ms`),
      el('div', { class: 'muted' }, `成功 ${num(p.pollsOk)} 次 · 失败 ${num(p.pollsFailed)} 次 · 下次 `, when(p.nextPollAt, now, true)),
      p.lastErrorCode ? el('div', { class: 'err' }, when(p.lastErrorAt, now), ' ', el('code', null, p.lastErrorCode), p.lastError ? `：${p.lastError}` : '') : null,
    )
  }

  function rejectedCell(s) {
    const codes = Object.keys(s.rejectedByCode || {}).map((c) => `${c} × ${s.rejectedByCode[c]}`).join('\n')
    return el('td', { class: 'n' + (s.rejected > 0 ? ' err' : ''), 'data-col': 'rejected', title: codes || null }, num(s.rejected))
  }

  function renderSystems(systems, totals, unknown, now) {
    renderSection('systems', systems, () => {
      if (systems.length === 0) return [emptyRow(13, '尚未登记业务系统（todo-inner system add）')]
      return systems.map((s) => el('tr', { 'data-system': s.id, 'data-enabled': s.enabled },
        el('td', { class: 'mono' }, s.id),
        el('td', null, s.name),
        el('td', { class: 'nowrap' }, MODES[s.mode] || s.mode, el('br'), el('small', null, s.mode)),
        el('td', null, s.enabled ? '是' : '否（已停用）'),
        el('td', { class: 'n', 'data-col': 'produced' }, num(s.produced)),
        el('td', { class: 'n', 'data-col': 'forwarded' }, num(s.forwarded)),
        el('td', { class: 'n', 'data-col': 'acked' }, num(s.acked)),
        el('td', { class: 'n', 'data-col': 'delivered' }, num(s.delivered)),
        el('td', { class: 'n', 'data-col': 'read' }, num(s.read)),
        el('td', { class: 'n', 'data-col': 'superseded' }, num(s.superseded)),
        rejectedCell(s),
        el('td', null, when(s.lastMessageAt, now)),
        pollCell(s, now),
      ))
    })
    renderSection('totals', [totals, unknown], () => [el('tr', null,
      el('td', { colspan: 4 }, '合计 ', el('small', null, 'total'), unknown > 0 ? el('small', { class: 'err' }, ` （含授权码无效 ${num(unknown)} 条）`) : null),
      ...['produced', 'forwarded', 'acked', 'delivered', 'read', 'superseded', 'rejected'].map((k) => el('td', { class: 'n', 'data-col': k }, num(totals[k]))),
      el('td', { colspan: 2 }),
    )])
  }

  function renderLatency(latency) {
    renderSection('latency', latency, () => LATENCY.map(([k, zh, en]) => {
      const p = latency[k]
      return el('tr', { 'data-latency': k },
        el('td', null, zh, ' ', el('small', null, en)),
        el('td', { class: 'n' }, num(p.n)),
        el('td', { class: 'n' }, msText(p.p50)), el('td', { class: 'n' }, msText(p.p95)), el('td', { class: 'n' }, msText(p.p99)))
    }))
  }

  function renderErrors(errors, now) {
    renderSection('errors', [errors, [...systemNames]], () => {
      if (errors.length === 0) return [emptyRow(6, '暂无错误')]
      return errors.map((e) => {
        const kind = e.kind === 'poll' ? '轮询失败' : `拒绝（${SOURCES[e.source] || e.source}）`
        const count = e.kind === 'poll' ? (e.count > 0 ? `连续 ${num(e.count)}` : '已恢复') : num(e.count)
        const system = e.system === null ? '授权码无效' : systemNames.get(e.system) || e.system
        return el('tr', { 'data-kind': e.kind, 'data-code': e.code },
          el('td', null, when(e.at, now)),
          el('td', { class: 'nowrap' }, kind),
          el('td', { title: e.system || null }, system),
          el('td', null, el('code', null, e.code)),
          el('td', { class: 'n' }, count),
          el('td', { class: 'err' }, e.reason || ''))
      })
    })
  }

  function renderSystemOptions(systems) {
    const sel = $('trace-system')
    renderSection('trace-system', systems.map((s) => [s.id, s.name]), () => [
      el('option', { value: '' }, '全部系统'),
      ...systems.map((s) => el('option', { value: s.id }, `${s.name}（${s.id}）`)),
    ])
    // replaceChildren resets the choice: keep the user's.
    if (sel.dataset.chosen && sel.value !== sel.dataset.chosen) sel.value = sel.dataset.chosen
  }

  // ---- trace ----------------------------------------------------------------------------------

  function traceError(text) {
    const e = $('trace-error')
    e.textContent = text
    e.hidden = !text
  }

  function traceView(m) {
    const t0 = m.stages.received
    const meta = el('dl', { class: 'meta' },
      ...[['ID', m.id], ['序号 seq', m.seq], ['系统', systemNames.has(m.system) ? `${systemNames.get(m.system)}（${m.system}）` : m.system],
        ['用户', m.user], ['数量', m.quantity], ['来源', SOURCES[m.source] || m.source]]
        .map(([k, v]) => el('div', null, el('dt', null, k), el('dd', null, String(v)))))
    const stages = el('ol', { class: 'stages' }, ...STAGES.map(([k, zh]) => {
      const at = m.stages[k]
      const done = typeof at === 'number'
      return el('li', { 'data-stage': k, 'data-done': done },
        el('div', { class: 'name' }, zh, ' ', el('small', null, k)),
        el('div', { class: 'mono', title: done ? dateTime(at) : null }, done ? clock(at) : '—'),
        el('div', { class: 'plus' }, done && typeof t0 === 'number' ? `+${num(at - t0)} ms` : ''))
    }))
    return el('div', { 'data-id': m.id, 'data-seq': m.seq }, meta, stages)
  }

  /** Shows one message; `quiet` (the 2 s refresh) leaves the box alone when the message is gone. */
  async function showTrace(q, quiet) {
    const { status, body } = await getJson(`api/trace/${encodeURIComponent(q)}`)
    if (q !== traced) return // another query started meanwhile
    const box = $('trace-result')
    if (status === 200 && body) {
      traceError('')
      renderSection('trace-result', body, () => [traceView(body)])
      box.hidden = false
    } else if (!quiet) {
      box.hidden = true
      rendered['trace-result'] = undefined
      traceError(status === 404 ? `未找到消息 ${q}（no such message）` : `查询失败（HTTP ${status}）`)
    }
  }

  $('trace-form').addEventListener('submit', (ev) => {
    ev.preventDefault()
    const q = $('trace-id').value.trim()
    $('user-result').hidden = true
    if (!/^[A-Za-z0-9-]{1,64}$/.test(q)) {
      traced = null
      $('trace-result').hidden = true
      traceError('请输入消息 ID（UUID）或序号（数字）')
      return
    }
    traced = q
    rendered['trace-result'] = undefined
    showTrace(q, false).catch((e) => traceError(`查询失败：${e.message}`))
  })

  function reached(m) {
    let last = 'received'
    for (const [k] of STAGES) if (typeof m.stages[k] === 'number' && k !== 'superseded') last = k
    return last
  }

  $('trace-system').addEventListener('change', (ev) => { ev.target.dataset.chosen = ev.target.value })

  $('user-form').addEventListener('submit', async (ev) => {
    ev.preventDefault()
    const user = $('trace-user').value.trim()
    const system = $('trace-system').value
    traced = null
    $('trace-result').hidden = true
    if (!user) {
      traceError('请输入用户登录名（LOGINNAME）')
      return
    }
    const qs = new URLSearchParams({ user })
    if (system) qs.set('system', system)
    try {
      const { status, body } = await getJson(`api/trace?${qs}`)
      if (status !== 200 || !body) throw new Error(`HTTP ${status}`)
      traceError('')
      const names = new Map(STAGES)
      const out = $('user-result')
      out.replaceChildren(body.messages.length === 0
        ? el('p', { class: 'muted' }, `用户 ${user} 没有消息`)
        : el('table', { class: 'grid' },
          el('thead', null, el('tr', null, ...['序号 seq', '消息 ID', '系统', '数量', '入库时间', '进度', '被替代'].map((h) => el('th', null, h)))),
          el('tbody', null, ...body.messages.map((m) => {
            const open = el('button', { type: 'button', class: 'link mono' }, m.id)
            open.addEventListener('click', () => {
              $('trace-id').value = m.id
              $('trace-form').requestSubmit()
            })
            return el('tr', { 'data-seq': m.seq },
              el('td', { class: 'n' }, num(m.seq)),
              el('td', null, open),
              el('td', { title: m.system }, systemNames.get(m.system) || m.system),
              el('td', { class: 'n' }, num(m.quantity)),
              el('td', null, dateTime(m.stages.stored)),
              el('td', null, names.get(reached(m))),
              el('td', null, typeof m.stages.superseded === 'number' ? '是' : ''))
          }))))
      out.hidden = false
    } catch (e) {
      traceError(`查询失败：${e.message}`)
    }
  })

  refresh().then(schedule)
})()

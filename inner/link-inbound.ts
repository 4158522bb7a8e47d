/**
 * What an outer sends the inner besides acks (DESIGN §3.4, §3.6): clients' receipts, which land in the
 * lifecycle (`delivered`, `read`) and are answered with `receipts-ack` once committed, and users' actions,
 * which are committed by the ActionService and answered with their status (`forwarded` when new, the
 * current one when the outer resends an action the inner already holds).
 */
import type { Logger } from '../shared/log.js'
import type { ReceiptsBody } from '../shared/protocol.js'
import type { BodyHandler, LinkClient } from './link-client.js'
import type { InnerStore } from './store.js'
import type { ActionService } from './actions.js'

export function createLinkInbound(deps: { store: InnerStore; actions: ActionService; log: Logger }): BodyHandler {
  const { store, actions, log } = deps

  function onReceipts(body: ReceiptsBody, link: LinkClient): void {
    const now = Date.now()
    let recorded = 0
    // One transaction per body; recordReceipt ignores a receipt whose seq is not that user's, so a
    // compromised DMZ host cannot mark somebody else's message as read.
    store.db.transaction(() => {
      for (const r of body.items) if (store.recordReceipt(r.user, r.seq, r.kind, Math.min(r.ts, now))) recorded++
    })()
    link.send({ t: 'receipts-ack', rid: body.rid })
    log.debug({ peer: link.label, rid: body.rid, items: body.items.length, recorded }, 'receipts recorded')
  }

  return (body, link) => {
    switch (body.t) {
      case 'receipts':
        return onReceipts(body, link)
      case 'action': {
        const rec = actions.receive(body.action, link.target.publicKey)
        if (rec) link.send({ t: 'action-status', ...rec })
        return
      }
    }
  }
}

// Glue between the policy server and the engine: per-message state by
// `instance`, and the one log line per decision that answers "why was this
// mail rejected?".
import type { Logger } from 'pino';
import { newMessageState, type PolicyEngine } from './engine.ts';
import type { PolicyRequest } from './request.ts';
import type { PolicyDecider, PolicySession } from './server.ts';

export function policyDecider(engine: () => PolicyEngine, log: Logger): PolicyDecider {
  return async (req: PolicyRequest, session: PolicySession): Promise<string> => {
    const started = performance.now();
    const msg = session.message(req.instance, newMessageState);
    const decision = await engine().decide(req, msg);
    const quiet = decision.decidedBy === 'not_rcpt' || decision.decidedBy === 'counted';
    if (quiet ? log.isLevelEnabled('debug') : log.isLevelEnabled('info')) {
      const line = {
        conn: session.id,
        state: req.protocolState,
        client: `${req.clientName}[${req.clientAddress}]`,
        helo: req.heloName,
        sender: req.sender,
        recipient: req.recipient,
        ...(req.queueId ? { queue_id: req.queueId } : {}),
        instance: req.instance,
        ...(req.policyContext ? { context: req.policyContext } : {}),
        action: decision.action,
        decided_by: decision.decidedBy,
        checks: decision.checks,
        ms: Math.round((performance.now() - started) * 10) / 10,
      };
      if (quiet) log.debug(line, 'policy decision');
      else log.info(line, 'policy decision');
    }
    return decision.action;
  };
}

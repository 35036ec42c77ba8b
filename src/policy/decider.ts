// Glue between the policy server and the engine: per-message state by
// `instance`, and the one log line per decision that answers "why was this
// mail rejected?".
import type { Logger } from 'pino';
import { newMessageState, type PolicyDecision, type PolicyEngine } from './engine.ts';
import type { PolicyRequest } from './request.ts';
import type { PolicyDecider, PolicySession } from './server.ts';

/**
 * The server's decide(): the action text, synchronously when the engine could
 * decide from its caches, else a promise of it. Throws or rejects on internal
 * failure (the server then answers the default action).
 */
export function policyDecider(engine: () => PolicyEngine, log: Logger): PolicyDecider {
  const logged = (req: PolicyRequest, session: PolicySession, decision: PolicyDecision, started: number): string => {
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
  return (req: PolicyRequest, session: PolicySession): string | Promise<string> => {
    const msg = session.message(req.instance, newMessageState);
    // The facts behind a decision only go into its log line: not built when no line will be written.
    const info = log.isLevelEnabled('info');
    if (!info) {
      // No decision line at this level (debug implies info): just the action, without the clock read and the line's closure.
      const decision = engine().decideNow(req, msg, false);
      return decision instanceof Promise ? decision.then(actionOf) : decision.action;
    }
    const started = performance.now();
    const decision = engine().decideNow(req, msg, info);
    if (decision instanceof Promise) return decision.then((d) => logged(req, session, d, started));
    return logged(req, session, decision, started);
  };
}

const actionOf = (d: PolicyDecision): string => d.action;

// The RFC 7208 test suite (203 cases) through evaluateSpf over the real DNS
// path: a test DNS server per scenario serving its zone data, createResolver
// (c-ares over UDP/TCP) and cachedResolver with a fresh cache per scenario.
// Every case must match, or be listed in SKIPPED with the reason; the skip
// list must be exactly the set of mismatches, so a fix shows up as a failure
// here too ("now passes: remove it from SKIPPED").
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { evaluateSpf } from '../../src/checks/spf.ts';
import { cachedResolver } from '../../src/dns/cache.ts';
import { createResolver } from '../../src/dns/resolver.ts';
import type { TestDnsServer } from '../support/dns-server.ts';
import { loadRfc7208Suite, runRfc7208Suite, type CaseEvaluator, type Rfc7208Run } from '../support/rfc7208.ts';
import { SKIPPED } from '../support/rfc7208.ts';

/** Cases that do not match, with the reason. Keys are suite case names. */

const RECEIVER = 'mx.test.example';

/** The per-case evaluation: evaluateSpf with a fresh DNS cache for each scenario. */
export function spfEvaluator(server: TestDnsServer): CaseEvaluator {
  // TIMEOUT names never answer: a short deadline keeps those cases quick.
  const resolver = cachedResolver(createResolver({ servers: [server.address], timeoutMs: 300 }), {
    maxEntries: 10_000,
    minTtlS: 0,
    maxTtlS: 3600,
    negativeTtlS: 60,
  });
  return async (c) => {
    const v = await evaluateSpf({ clientIp: c.host, helo: c.helo, sender: c.mailfrom, receiver: RECEIVER }, resolver);
    // Every verdict must also give a PREPEND-able header that states the same result.
    assert.ok(v.receivedSpf.startsWith(`Received-SPF: ${v.result} `), v.receivedSpf);
    assert.ok(!/[\r\n\0]/.test(v.receivedSpf) && Buffer.byteLength(v.receivedSpf) <= 998, v.receivedSpf);
    assert.match(v.receivedSpf, new RegExp(`identity=${v.identity};$`));
    return { result: v.result, ...(v.explanation !== undefined ? { explanation: v.explanation } : {}) };
  };
}

const suite = loadRfc7208Suite();
let run: Rfc7208Run;

before(async () => {
  run = await runRfc7208Suite({ evaluator: spfEvaluator });
  console.log(
    `RFC 7208 suite through evaluateSpf: ${run.passed}/${run.total} pass, ${Object.keys(SKIPPED).length} skipped, ${Math.round(run.ms)} ms`,
  );
});

after(() => {
  for (const [name, why] of run?.mismatches ?? []) if (!(name in SKIPPED)) console.log(`  unexpected mismatch ${name}: ${why}`);
});

describe('RFC 7208 suite', () => {
  it('has all 203 cases and the DNS server could serve all zone data', () => {
    assert.equal(run.total, 203);
    assert.deepEqual(run.dnsProblems, []);
  });

  it('mismatches are exactly the SKIPPED cases', () => {
    const names = new Set(suite.flatMap((s) => s.cases.map((c) => c.name)));
    for (const name of Object.keys(SKIPPED)) assert.ok(names.has(name), `SKIPPED names a case the suite does not have: ${name}`);
    assert.deepEqual([...run.mismatches.keys()].sort(), Object.keys(SKIPPED).sort());
  });

  for (const scenario of suite) {
    describe(scenario.description, () => {
      for (const c of scenario.cases) {
        it(c.name, () => {
          const outcome = run.outcomes.find((o) => o.case.name === c.name);
          assert.ok(outcome, `no outcome for ${c.name}`);
          const skip = SKIPPED[c.name];
          if (skip !== undefined) {
            assert.ok(!outcome.ok, `${c.name} now passes: remove it from SKIPPED`);
            return;
          }
          assert.ok(outcome.ok, `${c.name}: ${outcome.mismatch} (${JSON.stringify(outcome.got)})`);
        });
      }
    });
  }
});

// `mailwarden serve`: opens the directory, starts every configured service,
// reloads on SIGHUP (a bad config or directory keeps the running one), and
// shuts down gracefully on SIGTERM/SIGINT.
import { isDeepStrictEqual } from 'node:util';
import { loadConfig, type Config } from '../config/load.ts';
import { openDirectory, type OpenedDirectory } from '../directory/open.ts';
import { createLogger, type Logger } from '../logging/logger.ts';
import { LookupService } from '../lookup/service.ts';
import { answerSocketmap, cachedSocketmapFrame } from '../socketmap/answer.ts';
import { startSocketmapServer } from '../socketmap/server.ts';
import type { Listener } from '../net/listener.ts';
import { formatListen } from '../config/listen.ts';
import { DovecotAuth } from '../auth/dovecot-auth.ts';
import { startAuthHttpServer } from '../auth/http-server.ts';
import { PasswordVerifier } from '../auth/verifier.ts';
import { BruteForcePolicy } from '../auth/policy.ts';
import { startDictServer } from '../dict/server.ts';
import { MailwardenDict } from '../dict/handler.ts';
import { createResolver } from '../dns/resolver.ts';
import { cachedResolver, type CachedDnsResolver } from '../dns/cache.ts';
import { PolicyEngine } from '../policy/engine.ts';
import { needsPolicyState } from '../policy/config.ts';
import { policyDecider } from '../policy/decider.ts';
import { startPolicyServer } from '../policy/server.ts';
import { openPolicyState } from '../state/open.ts';
import type { PolicyStateStore } from '../state/types.ts';
import { startMilterServer } from '../milter/server.ts';
import { milterRuntime } from '../milter/runtime.ts';
import { AuthWorkerPool } from '../milter/worker-pool.ts';
import { SpfMemory } from '../checks/spf-memory.ts';

const SHUTDOWN_GRACE_MS = 5000;
/** Answers live for their TTL (5 s to 1 h); NXDOMAIN, the usual DNSBL answer, for 5 minutes. */
const DNS_CACHE = { maxEntries: 200_000, minTtlS: 5, maxTtlS: 3600, negativeTtlS: 300 } as const;

interface Running {
  config: Config;
  directory: OpenedDirectory;
  lookups: LookupService;
  dovecot: DovecotAuth;
  /** The SMTPD policy decision engine, when `policy:` is configured. */
  policy?: PolicyEngine;
  /** SPF verdicts of the last minute, shared by the policy engine and the milter; new with each configuration. */
  spfMemory: SpfMemory;
  listeners: Map<ServiceName, Listener>;
}

/**
 * Each service: its config section (absent = off), what of it the listener
 * holds (`bound`: the rest is read per request or per message, so a reload
 * that changes only the rest keeps the socket and its connections), how to
 * start it, and how a kept listener takes a new section (`adopt`).
 */
const SERVICES = {
  socketmap: {
    section: (c: Config) => c.socketmap,
    bound: (c: Config) => listenOf(c.socketmap),
    start: (d: Daemon, c: Config) => startSocketmapServer({
      listen: c.socketmap!,
      log: d.log.child({ service: 'socketmap' }),
      // Reads the current state on every request, so a reload swaps the directory under live connections.
      lookup: (map, key) => answerSocketmap(d.state!.lookups, map, key),
      cachedFrame: (map, key) => cachedSocketmapFrame(d.state!.lookups, map, key),
    }),
  },
  auth: {
    section: (c: Config) => c.auth,
    bound: (c: Config) => ({ ...listenOf(c.auth), secret: c.auth?.secret }),
    start: (d: Daemon, c: Config) => startAuthHttpServer({
      config: c.auth!, auth: () => d.state!.dovecot, log: d.log.child({ service: 'auth' }), policy: () => d.policy,
    }),
  },
  dict: {
    section: (c: Config) => c.dict,
    bound: (c: Config) => listenOf(c.dict),
    start: (d: Daemon, c: Config) => startDictServer({
      listen: c.dict!,
      handler: new MailwardenDict(() => d.state!, d.log.child({ service: 'dict' })),
      log: d.log.child({ service: 'dict' }),
    }),
  },
  policy: {
    section: (c: Config) => c.policy,
    bound: (c: Config) => ({ ...listenOf(c.policy), defaultAction: c.policy?.defaultAction, timeoutMs: c.policy?.timeoutMs }),
    start: (d: Daemon, c: Config) => {
      const log = d.log.child({ service: 'policy' });
      return startPolicyServer({
        listen: c.policy!,
        log,
        // Reads the current engine on every request, so a reload applies to live connections.
        decide: policyDecider(() => d.state!.policy!, log),
        defaultAction: c.policy!.defaultAction,
        deadlineMs: c.policy!.timeoutMs,
      });
    },
  },
  milter: {
    section: (c: Config) => c.milter,
    bound: (c: Config) => listenOf(c.milter),
    start: (d: Daemon, c: Config) => startMilter(d, c),
    // milter.workers: the pool is resized under the running listener.
    adopt: (l: Listener, c: Config) => (l as MilterListener).setWorkers(c.milter!.workers),
  },
} as const satisfies Record<string, {
  section: (c: Config) => unknown;
  bound: (c: Config) => unknown;
  start: (d: Daemon, c: Config) => Promise<Listener>;
  adopt?: (l: Listener, c: Config) => void;
}>;
type ServiceName = keyof typeof SERVICES;

function listenOf(section: { listen: unknown; unix: unknown } | undefined): { listen: unknown; unix: unknown } {
  return { listen: section?.listen, unix: section?.unix };
}

interface MilterListener extends Listener {
  setWorkers(workers: number): void;
}

/**
 * The milter listener and its auth worker threads (milter.workers). A reload
 * that changes the number swaps the pool under the running listener: messages
 * begun on the old pool finish there (it stops once they are done, within the
 * shutdown grace), new ones go to the new pool. Shutdown stops all of them.
 */
async function startMilter(d: Daemon, c: Config): Promise<MilterListener> {
  const log = d.log.child({ service: 'milter' });
  const newPool = (workers: number) => (workers > 0 ? new AuthWorkerPool({ size: workers, log }) : undefined);
  let pool = newPool(c.milter!.workers);
  const retiring = new Set<Promise<void>>();
  const retire = (old: AuthWorkerPool | undefined) => {
    if (!old) return;
    const done = old.close(SHUTDOWN_GRACE_MS).finally(() => retiring.delete(done));
    retiring.add(done);
  };
  let listener: Listener;
  try {
    listener = await startMilterServer({
      listen: c.milter!,
      log,
      // Read at each MAIL, so a reload applies to the next message; same DNS cache as the policy service, same lookups as the socketmap (milter.arc).
      runtime: () => {
        const current = d.state?.config.milter ? d.state.config : c;
        return milterRuntime(current, d.dnsResolver(current), d.state?.spfMemory, d.state?.lookups, pool);
      },
    });
  } catch (err) {
    await pool?.close();
    throw err;
  }
  return {
    get address() { return listener.address; },
    get connections() { return listener.connections; },
    setWorkers(workers: number) {
      if ((pool?.size ?? 0) === workers) return;
      const old = pool;
      pool = newPool(workers);
      if (!pool) log.info({ workers: 0 }, 'milter auth worker threads stopping; messages are verified and signed in the main thread');
      retire(old);
    },
    async close(graceMs?: number) {
      await listener.close(graceMs);
      retire(pool);
      pool = undefined;
      await Promise.all(retiring);
    },
  };
}

export class Daemon {
  readonly log: Logger;
  #state: Running | undefined;
  #reloading = false;

  constructor(log: Logger) {
    this.log = log;
  }

  get state(): Running | undefined {
    return this.#state;
  }

  #verifier: PasswordVerifier | undefined;
  /** Brute-force counters: in memory, kept across reloads (only the thresholds change). */
  #policy: BruteForcePolicy | undefined;

  get policy(): BruteForcePolicy | undefined {
    return this.#policy;
  }

  /** One DNS resolver and cache for every check; replaced only when dns: changes. */
  #dns: { key: string; resolver: CachedDnsResolver } | undefined;
  /** Shared policy state (rate counters, greylist) in the directory backend; follows the directory. */
  #policyState: { directory: OpenedDirectory; store: PolicyStateStore } | undefined;

  /** The shared DNS resolver and cache (the policy service and the milter use the same one). */
  dnsResolver(config: Config): CachedDnsResolver {
    const key = JSON.stringify(config.dns);
    if (this.#dns?.key !== key) {
      const upstream = createResolver({ servers: config.dns.servers, timeoutMs: config.dns.timeoutMs });
      this.#dns = { key, resolver: cachedResolver(upstream, DNS_CACHE) };
    }
    return this.#dns.resolver;
  }

  /** Opens the policy state store for this directory when the policy service needs one. */
  async #preparePolicyState(config: Config, directory: OpenedDirectory): Promise<PolicyStateStore | undefined> {
    const p = config.policy;
    if (!p || !needsPolicyState(p)) return undefined;
    if (this.#policyState?.directory === directory) return this.#policyState.store;
    const store = await openPolicyState(config.directory, directory, this.log.child({ component: 'policy-state' }));
    return store;
  }

  async #adoptPolicyState(directory: OpenedDirectory, store: PolicyStateStore | undefined): Promise<void> {
    const old = this.#policyState;
    if (old?.store === store) return;
    this.#policyState = store ? { directory, store } : undefined;
    if (old) await old.store.close();
  }

  async start(config: Config): Promise<void> {
    const directory = await this.#openDirectory(config);
    const store = await this.#preparePolicyState(config, directory);
    await this.#adoptPolicyState(directory, store);
    const state = this.#running(config, directory, undefined);
    this.#state = state;
    await this.#startServices(state, undefined);
    this.log.info({ config: config.file, backend: config.directory.backend, services: serviceList(config) }, 'mailwarden started');
  }

  async #openDirectory(config: Config): Promise<OpenedDirectory> {
    const directory = await openDirectory(config.directory, this.log.child({ component: 'directory' }));
    directory.watch();
    return directory;
  }

  #lookups(config: Config, directory: OpenedDirectory): LookupService {
    const cache = config.directory.backend === 'mysql'
      ? { cacheTtlMs: config.directory.cacheTtlMs, cacheSize: config.directory.cacheSize, preload: config.directory.preload ?? true }
      // The YAML directory changes only by reload, which flushes the cache: the TTL is a mere backstop.
      : { cacheTtlMs: 3_600_000, cacheSize: 1_000_000 };
    return new LookupService(directory, { recipientDelimiter: config.recipientDelimiter, ...cache }, this.log.child({ service: 'lookup' }));
  }

  /** The state for a config; reuses what did not change (the lookup cache, the verification cache). */
  #running(config: Config, directory: OpenedDirectory, old: Running | undefined): Running {
    const lookups = old && directory === old.directory && config.recipientDelimiter === old.config.recipientDelimiter
      ? old.lookups
      : this.#lookups(config, directory);
    const auth = config.auth;
    // Keep the verifier (and its cache of recent logins) unless its own settings changed.
    const settings = verifierSettings(config);
    if (!this.#verifier || !old || !isDeepStrictEqual(settings, verifierSettings(old.config))) {
      this.#verifier = new PasswordVerifier({ ...settings, cacheMaxEntries: 100_000 });
    }
    // Created once; a successful reload only changes its thresholds (reload() below).
    if (auth && !this.#policy) this.#policy = new BruteForcePolicy(auth.policy);
    const dovecot = new DovecotAuth(directory, this.#verifier, {
      userdb: config.userdb, rehash: auth?.rehash ?? true, cache: dovecotCacheSettings(config), ...(lookups.rows ? { rows: lookups.rows } : {}),
    }, this.log.child({ service: 'dovecot-auth' }));
    const spfMemory = new SpfMemory();
    const policy = config.policy
      ? new PolicyEngine({
          spfMemory,
          config: config.policy,
          lookups,
          resolver: this.dnsResolver(config),
          ...(this.#policyState?.directory === directory ? { state: this.#policyState.store } : {}),
        })
      : undefined;
    return { config, directory, lookups, dovecot, ...(policy ? { policy } : {}), spfMemory, listeners: new Map() };
  }

  /**
   * Starts what is configured; keeps a listener whose bound settings did not
   * change (and its connections), handing it the new section once every
   * service is up. All or nothing: a listener on a new address starts next to
   * the old one, which closes only when every service is up; one that must
   * reuse its address (same socket, other bound settings) closes first, and is
   * reopened with the running configuration if the reload fails.
   */
  async #startServices(state: Running, previous: Running | undefined): Promise<void> {
    const adoptions: Array<() => void> = [];
    const retired: Listener[] = [];
    const started: ServiceName[] = [];
    const reopened: ServiceName[] = [];
    const held = new Map<string, ServiceName>();
    for (const [name, l] of previous?.listeners ?? []) held.set(formatListen(l.address), name);
    try {
      const sameAddress: ServiceName[] = [];
      for (const name of Object.keys(SERVICES) as ServiceName[]) {
        const spec = SERVICES[name];
        const section = spec.section(state.config);
        const old = previous?.listeners.get(name);
        if (old && section && isDeepStrictEqual(spec.bound(previous!.config), spec.bound(state.config))) {
          if ('adopt' in spec) adoptions.push(() => spec.adopt(old, state.config));
          state.listeners.set(name, old);
          continue;
        }
        const holder = section && held.get(formatListen(section.listen));
        if (holder === name) {
          sameAddress.push(name);
          continue;
        }
        if (old) retired.push(old);
        if (!section) continue;
        if (holder !== undefined) throw new Error(`${name}: ${formatListen(section.listen)} is in use by the running ${holder} service`);
        state.listeners.set(name, await spec.start(this, state.config));
        started.push(name);
      }
      for (const name of sameAddress) {
        const old = previous!.listeners.get(name)!;
        reopened.push(name);
        await old.close(SHUTDOWN_GRACE_MS);
        state.listeners.set(name, await SERVICES[name].start(this, state.config));
        started.push(name);
      }
    } catch (err) {
      for (const name of started) await state.listeners.get(name)!.close(0);
      for (const name of reopened) {
        try {
          previous!.listeners.set(name, await SERVICES[name].start(this, previous!.config));
        } catch (again) {
          previous!.listeners.delete(name);
          this.log.error({ service: name, err: (again as Error).message }, 'reload: cannot reopen the running listener; the service is down until the next successful reload');
        }
      }
      throw err;
    }
    for (const l of retired) await l.close(SHUTDOWN_GRACE_MS);
    for (const adopt of adoptions) adopt();
  }

  /** SIGHUP: re-read config and directory; on any error keep everything as it is. */
  async reload(): Promise<boolean> {
    const old = this.#state;
    if (!old || this.#reloading) return false;
    this.#reloading = true;
    try {
      let config: Config;
      try {
        config = loadConfig(old.config.file);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'reload: config invalid, keeping the running configuration');
        return false;
      }
      this.log.level = config.log.level;
      let directory = old.directory;
      if (!isDeepStrictEqual(config.directory, old.config.directory)) {
        try {
          directory = await this.#openDirectory(config);
        } catch (err) {
          this.log.error({ err: (err as Error).message }, 'reload: directory cannot be opened, keeping the running configuration');
          return false;
        }
      } else if ('reload' in directory && typeof directory.reload === 'function') {
        (directory.reload as () => boolean)();
      }
      let state: Running | undefined;
      let store: PolicyStateStore | undefined;
      const previousStore = this.#policyState;
      try {
        store = await this.#preparePolicyState(config, directory);
        // The engine takes the store from #policyState: point it at the new one while building, roll back on failure.
        this.#policyState = store ? { directory, store } : undefined;
        state = this.#running(config, directory, old);
        await this.#startServices(state, old);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'reload: a service failed to start, keeping the running configuration');
        if (store && store !== previousStore?.store) await store.close().catch(() => undefined);
        this.#policyState = previousStore;
        if (state && state.lookups !== old.lookups) state.lookups.close();
        if (directory !== old.directory) await directory.close();
        return false;
      }
      if (previousStore && previousStore.store !== store) await previousStore.store.close().catch(() => undefined);
      this.#state = state;
      if (config.auth) this.#policy?.configure(config.auth.policy);
      // A new lookup service (new directory or recipient_delimiter): the old one's background preload stops.
      if (state.lookups !== old.lookups) old.lookups.close();
      if (directory !== old.directory) await old.directory.close();
      this.log.info({ config: config.file, services: serviceList(config) }, 'configuration reloaded');
      return true;
    } finally {
      this.#reloading = false;
    }
  }

  async stop(): Promise<void> {
    const s = this.#state;
    if (!s) return;
    this.#state = undefined;
    await Promise.all([...s.listeners.values()].map((l) => l.close(SHUTDOWN_GRACE_MS)));
    await this.#adoptPolicyState(s.directory, undefined);
    s.lookups.close();
    await s.directory.close();
    this.log.info('mailwarden stopped');
  }
}

function verifierSettings(config: Config) {
  return {
    argon2: config.passwords.argon2,
    cacheTtlMs: config.auth?.verifyCacheTtlMs ?? 0,
    concurrency: config.auth?.verifyConcurrency ?? 2,
  };
}

/** Dovecot's per-user answers are cached like the lookups: directory.cache_ttl/cache_size, YAML until the file changes. */
function dovecotCacheSettings(config: Config): { ttlMs: number; maxEntries: number } {
  return config.directory.backend === 'mysql'
    ? { ttlMs: config.directory.cacheTtlMs, maxEntries: config.directory.cacheSize }
    : { ttlMs: 3_600_000, maxEntries: 1_000_000 };
}

function serviceList(config: Config): string[] {
  return (Object.keys(SERVICES) as ServiceName[]).filter((name) => SERVICES[name].section(config));
}

/** Entry point for `mailwarden serve`. */
export async function serve(configFile: string): Promise<void> {
  const config = loadConfig(configFile);
  const log = createLogger(config.log.level);
  const daemon = new Daemon(log);
  await daemon.start(config);
  if (serviceList(config).length === 0) log.warn('no service configured (add a socketmap, auth, dict or policy section with listen)');
  process.on('SIGHUP', () => void daemon.reload());
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    log.info({ signal }, 'shutting down');
    daemon.stop().then(() => log.flush(() => process.exit(0)), (err) => {
      log.error({ err }, 'shutdown failed');
      process.exit(1);
    });
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}

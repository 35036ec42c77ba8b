// `mailwarden serve`: opens the directory, starts every configured service,
// reloads on SIGHUP (a bad config or directory keeps the running one), and
// shuts down gracefully on SIGTERM/SIGINT.
import { isDeepStrictEqual } from 'node:util';
import { loadConfig, type Config } from '../config/load.ts';
import { openDirectory, type OpenedDirectory } from '../directory/open.ts';
import { createLogger, type Logger } from '../logging/logger.ts';
import { LookupService } from '../lookup/service.ts';
import { answerSocketmap } from '../socketmap/answer.ts';
import { startSocketmapServer } from '../socketmap/server.ts';
import type { Listener } from '../net/listener.ts';

const SHUTDOWN_GRACE_MS = 5000;

interface Running {
  config: Config;
  directory: OpenedDirectory;
  lookups: LookupService;
  socketmap?: Listener;
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

  async start(config: Config): Promise<void> {
    const directory = await this.#openDirectory(config);
    const state: Running = { config, directory, lookups: this.#lookups(config, directory) };
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
      ? { cacheTtlMs: config.directory.cacheTtlMs, cacheSize: config.directory.cacheSize }
      : { cacheTtlMs: 0, cacheSize: 0 };
    return new LookupService(directory, { recipientDelimiter: config.recipientDelimiter, ...cache }, this.log.child({ service: 'lookup' }));
  }

  async #startServices(state: Running, previous: Running | undefined): Promise<void> {
    const sm = state.config.socketmap;
    if (previous?.socketmap && sm && isDeepStrictEqual(previous.config.socketmap, sm)) {
      state.socketmap = previous.socketmap; // same endpoint: keep the socket and its connections
    } else {
      if (previous?.socketmap) await previous.socketmap.close(SHUTDOWN_GRACE_MS);
      if (sm) {
        const log = this.log.child({ service: 'socketmap' });
        // The closure reads #state on every request, so a reload swaps the directory under live connections.
        state.socketmap = await startSocketmapServer({
          listen: sm,
          log,
          lookup: (map, key) => answerSocketmap(this.#state!.lookups, map, key),
        });
      }
    }
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
      // Reuse the lookup service (and its warm cache) unless what it depends on changed.
      const lookups = directory === old.directory && config.recipientDelimiter === old.config.recipientDelimiter
        ? old.lookups
        : this.#lookups(config, directory);
      const state: Running = { config, directory, lookups };
      try {
        await this.#startServices(state, old);
      } catch (err) {
        this.log.error({ err: (err as Error).message }, 'reload: a service failed to start, keeping the running configuration');
        if (directory !== old.directory) await directory.close();
        return false;
      }
      this.#state = state;
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
    await s.socketmap?.close(SHUTDOWN_GRACE_MS);
    await s.directory.close();
    this.log.info('mailwarden stopped');
  }
}

function serviceList(config: Config): string[] {
  return config.socketmap ? ['socketmap'] : [];
}

/** Entry point for `mailwarden serve`. */
export async function serve(configFile: string): Promise<void> {
  const config = loadConfig(configFile);
  const log = createLogger(config.log.level);
  const daemon = new Daemon(log);
  await daemon.start(config);
  if (serviceList(config).length === 0) log.warn('no service configured (add a socketmap section with listen)');
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

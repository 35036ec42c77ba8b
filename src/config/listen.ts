// Postfix-notation endpoints: `unix:/path` or `inet:host:port`.

export type ListenAddress =
  | { readonly kind: 'unix'; readonly path: string }
  | { readonly kind: 'inet'; readonly host: string; readonly port: number };

/** Parses an endpoint; returns an error message instead of throwing. */
export function parseListen(text: string): ListenAddress | string {
  if (text.startsWith('unix:')) {
    const path = text.slice(5);
    if (!path.startsWith('/')) return `unix socket path must be absolute: ${JSON.stringify(text)}`;
    return { kind: 'unix', path };
  }
  if (text.startsWith('inet:')) {
    const rest = text.slice(5);
    // [::1]:port or host:port
    const m = /^\[([^\]]+)\]:(\d+)$/.exec(rest) ?? /^([^:[\]]+):(\d+)$/.exec(rest);
    if (!m) return `expected inet:host:port, got ${JSON.stringify(text)}`;
    const port = Number(m[2]);
    if (!Number.isInteger(port) || port < 0 || port > 65535) return `invalid port in ${JSON.stringify(text)}`;
    return { kind: 'inet', host: m[1]!, port };
  }
  return `expected unix:/path or inet:host:port, got ${JSON.stringify(text)}`;
}

export function formatListen(address: ListenAddress): string {
  if (address.kind === 'unix') return `unix:${address.path}`;
  return address.host.includes(':') ? `inet:[${address.host}]:${address.port}` : `inet:${address.host}:${address.port}`;
}

/** True for loopback hosts: services that must never face the network check this. */
export function isLoopbackHost(host: string): boolean {
  return host === 'localhost' || host === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

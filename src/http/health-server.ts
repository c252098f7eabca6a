/**
 * The health server: a few read-only GET endpoints for ECS and humans, nothing else.
 *
 * - `GET /healthz`: the process is alive and its event loop answers (200), with the sync state as JSON;
 *   503 only when the daemon has declared itself broken.
 * - `GET /readyz`: 200 once the database is restored and in place; 503 before that and while stopping.
 * - `GET /status`: the daemon's status as JSON (configuration without secrets, last upload, last error).
 * - `GET /metrics` and other extra routes through {@link HealthSource.extra}.
 * Any other path is 404, any method but GET and HEAD 405. Bodies never contain credentials: the sources
 * hold none, and every body also passes through the `scrub` function the CLI gives (secret values it knows).
 *
 * It binds to one address, loopback by default (config.ts, DEFAULT_HEALTH_HOST): an ECS container health
 * check runs inside the task's network namespace, so nothing outside needs to reach it.
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from '../logger.js';

export interface HealthSource {
  /** Whether the app may use the database now. */
  ready(): boolean;
  /** Liveness: `ok: false` makes /healthz answer 503. */
  live(): { ok: boolean; state: string };
  /** The status document for /status. */
  status(): unknown;
  /** Extra routes (e.g. /metrics): return undefined to fall through to 404. */
  extra?(path: string): Promise<{ contentType: string; body: string } | undefined>;
}

export interface HealthServer {
  readonly port: number;
  close(): Promise<void>;
}

type Send = (res: ServerResponse, status: number, body: unknown, contentType?: string) => void;

function sender(scrub: (text: string) => string): Send {
  return (res, status, body, contentType = 'application/json') => {
    const text = scrub(typeof body === 'string' ? body : `${JSON.stringify(body)}\n`);
    res.writeHead(status, {
      'content-type': contentType,
      'cache-control': 'no-store',
      'content-length': Buffer.byteLength(text),
      'x-content-type-options': 'nosniff',
    });
    res.end(text);
  };
}

/** Start listening. Resolves once bound; rejects with a clear error when the port is taken. */
export async function startHealthServer(options: {
  host: string;
  port: number;
  source: HealthSource;
  log: Logger;
  /** Applied to every response body (removes secret values); identity when absent. */
  scrub?: ((text: string) => string) | undefined;
}): Promise<HealthServer> {
  const { source, log } = options;
  const send = sender(options.scrub ?? ((text) => text));
  const server: Server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      send(res, 405, { error: 'method not allowed' });
      return;
    }
    void (async () => {
      try {
        if (path === '/healthz') {
          const live = source.live();
          send(res, live.ok ? 200 : 503, { status: live.ok ? 'ok' : 'unhealthy', state: live.state });
        } else if (path === '/readyz') {
          const ready = source.ready();
          send(res, ready ? 200 : 503, { status: ready ? 'ready' : 'not ready' });
        } else if (path === '/status') {
          send(res, 200, source.status());
        } else {
          const extra = await source.extra?.(path);
          if (extra) send(res, 200, extra.body, extra.contentType);
          else send(res, 404, { error: 'not found', endpoints: ['/healthz', '/readyz', '/status', '/metrics'] });
        }
      } catch (error) {
        log.error({ err: (error as Error).message, path }, 'health endpoint failed');
        send(res, 500, { error: 'internal error' });
      }
    })();
  });
  server.keepAliveTimeout = 5_000;
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port, options.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  log.info({ host: options.host, port }, 'health server listening');
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

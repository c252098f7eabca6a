import { request } from 'node:http';
import { afterEach, describe, expect, it } from 'vitest';
import { startHealthServer, type HealthServer, type HealthSource } from '../../src/http/health-server.js';
import { silentLogger } from '../../src/logger.js';

interface Reply {
  readonly status: number;
  readonly headers: Record<string, string | string[] | undefined>;
  readonly body: string;
}

function call(port: number, path: string, method = 'GET', host = '127.0.0.1'): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request({ host, port, path, method, agent: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

/** A source whose answers the test can change. */
function source(): HealthSource & { isReady: boolean; isLive: boolean; doc: unknown } {
  const s = {
    isReady: false,
    isLive: true,
    doc: { phase: 'restoring', uploads: 0 } as unknown,
    ready: () => s.isReady,
    live: () => ({ ok: s.isLive, state: s.isLive ? 'ready' : 'failed' }),
    status: () => s.doc,
    extra: (path: string) =>
      Promise.resolve(path === '/metrics' ? { contentType: 'text/plain; version=0.0.4', body: 'up 1\n' } : undefined),
  };
  return s;
}

const servers: HealthServer[] = [];
async function start(src: HealthSource, host = '127.0.0.1'): Promise<HealthServer> {
  const server = await startHealthServer({ host, port: 0, source: src, log: silentLogger() });
  servers.push(server);
  return server;
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

describe('health server', () => {
  it('binds an ephemeral port when told port 0', async () => {
    const a = await start(source());
    const b = await start(source());
    expect(a.port).toBeGreaterThan(0);
    expect(b.port).toBeGreaterThan(0);
    expect(a.port).not.toBe(b.port);
  });

  it('answers /healthz with 200 while live and 503 once broken', async () => {
    const src = source();
    const server = await start(src);
    const ok = await call(server.port, '/healthz');
    expect(ok.status).toBe(200);
    expect(ok.headers['content-type']).toBe('application/json');
    expect(ok.headers['cache-control']).toBe('no-store');
    expect(JSON.parse(ok.body)).toEqual({ status: 'ok', state: 'ready' });
    src.isLive = false;
    const broken = await call(server.port, '/healthz');
    expect(broken.status).toBe(503);
    expect(JSON.parse(broken.body)).toEqual({ status: 'unhealthy', state: 'failed' });
  });

  it('answers /readyz with 503 before ready and 200 after', async () => {
    const src = source();
    const server = await start(src);
    const before = await call(server.port, '/readyz');
    expect(before.status).toBe(503);
    expect(JSON.parse(before.body)).toEqual({ status: 'not ready' });
    src.isReady = true;
    const after = await call(server.port, '/readyz?verbose=1');
    expect(after.status).toBe(200);
    expect(JSON.parse(after.body)).toEqual({ status: 'ready' });
  });

  it('serves the status document as JSON at /status', async () => {
    const src = source();
    src.doc = { phase: 'ready', uploads: 3, lastError: { code: 'SlowDown' } };
    const server = await start(src);
    const reply = await call(server.port, '/status');
    expect(reply.status).toBe(200);
    expect(reply.headers['content-type']).toBe('application/json');
    expect(JSON.parse(reply.body)).toEqual(src.doc);
    expect(Number(reply.headers['content-length'])).toBe(Buffer.byteLength(reply.body));
  });

  it('serves extra routes and answers 404 for unknown paths', async () => {
    const server = await start(source());
    const metrics = await call(server.port, '/metrics');
    expect(metrics.status).toBe(200);
    expect(metrics.headers['content-type']).toContain('text/plain');
    expect(metrics.body).toBe('up 1\n');
    const missing = await call(server.port, '/nope');
    expect(missing.status).toBe(404);
    expect(JSON.parse(missing.body)).toMatchObject({ error: 'not found' });
  });

  it.each(['POST', 'PUT', 'DELETE'])('answers 405 to %s with an Allow header', async (method) => {
    const src = source();
    const server = await start(src);
    const reply = await call(server.port, '/readyz', method);
    expect(reply.status).toBe(405);
    expect(reply.headers.allow).toBe('GET, HEAD');
  });

  it('answers 500 when the source throws, and keeps serving', async () => {
    const src = source();
    src.status = () => {
      throw new Error('status broke');
    };
    const server = await start(src);
    expect((await call(server.port, '/status')).status).toBe(500);
    expect((await call(server.port, '/healthz')).status).toBe(200);
  });

  it('binds only the address it is told (Linux routes all of 127/8 to loopback)', async () => {
    const one = await start(source(), '127.0.0.1');
    expect((await call(one.port, '/healthz', 'GET', '127.0.0.1')).status).toBe(200);
    await expect(call(one.port, '/healthz', 'GET', '127.0.0.2')).rejects.toThrow(/ECONNREFUSED/);

    const two = await start(source(), '127.0.0.2');
    expect((await call(two.port, '/healthz', 'GET', '127.0.0.2')).status).toBe(200);
    await expect(call(two.port, '/healthz', 'GET', '127.0.0.1')).rejects.toThrow(/ECONNREFUSED/);
  });

  it('answers HEAD with the headers and no body', async () => {
    const server = await start(source());
    const reply = await call(server.port, '/healthz', 'HEAD');
    expect(reply.status).toBe(200);
    expect(reply.body).toBe('');
    expect(Number(reply.headers['content-length'])).toBeGreaterThan(0);
  });

  it.each(['OPTIONS', 'PATCH', 'TRACE'])('answers 405 to %s on every path', async (method) => {
    const server = await start(source());
    for (const path of ['/status', '/metrics', '/nope']) expect((await call(server.port, path, method)).status).toBe(405);
  });

  it('serves only its exact paths: no prefixes, dot segments or trailing slashes', async () => {
    const server = await start(source());
    for (const path of ['/', '/status/', '/healthz/../status', '/readyz.json', '/metrics/x', '/STATUS']) {
      const reply = await call(server.port, path);
      expect(reply.status, path).toBe(404);
      expect(reply.headers['x-content-type-options']).toBe('nosniff');
    }
  });

  it('passes every body through scrub, extra routes included', async () => {
    const src = source();
    src.doc = { lastError: { message: 'failed with SECRET-VALUE-1234' } };
    src.extra = (path: string) =>
      Promise.resolve(path === '/metrics' ? { contentType: 'text/plain', body: 'x{v="SECRET-VALUE-1234"} 1\n' } : undefined);
    const server = await startHealthServer({
      host: '127.0.0.1',
      port: 0,
      source: src,
      log: silentLogger(),
      scrub: (text) => text.split('SECRET-VALUE-1234').join('[redacted]'),
    });
    servers.push(server);
    const status = await call(server.port, '/status');
    expect(status.body).not.toContain('SECRET-VALUE-1234');
    expect(JSON.parse(status.body)).toEqual({ lastError: { message: 'failed with [redacted]' } });
    expect(Number(status.headers['content-length'])).toBe(Buffer.byteLength(status.body));
    expect((await call(server.port, '/metrics')).body).toBe('x{v="[redacted]"} 1\n');
  });

  it('rejects when the port is taken', async () => {
    const first = await start(source());
    await expect(startHealthServer({ host: '127.0.0.1', port: first.port, source: source(), log: silentLogger() })).rejects.toThrow(
      /EADDRINUSE/,
    );
  });

  it('stops accepting connections once closed', async () => {
    const server = await startHealthServer({ host: '127.0.0.1', port: 0, source: source(), log: silentLogger() });
    expect((await call(server.port, '/healthz')).status).toBe(200);
    await server.close();
    await expect(call(server.port, '/healthz')).rejects.toThrow(/ECONNREFUSED/);
  });
});

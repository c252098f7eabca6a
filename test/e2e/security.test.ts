/**
 * End to end: credentials never appear in anything db-sync prints or serves, whatever goes wrong, at the
 * most verbose log level; and the transport rules hold (no credentials in the endpoint, no plain http to
 * another host without DB_S3_ALLOW_HTTP).
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, runCli, startCli, waitFor, type Running } from '../helpers/cli.js';
import { startProxiedDaemon } from '../helpers/daemon.js';
import { addRows, createDatabase, tempDir } from '../helpers/db.js';
import { createBucket, s3Env, s3Info } from '../helpers/s3.js';

/** Distinctive values: any appearance in output is a leak, not a coincidence. */
const SECRET = 'dbSyncE2E/Secret+Key/9fQ2xLmZ7vR4';
const TOKEN = 'IQoJb3JpZ2luX2VjEdbSyncE2ESessionToken//////////wEaCXVz=';

/** Every body the health server gives for its paths, a 404 and a 405 included. */
async function scrapeAll(port: number): Promise<string> {
  const bodies: string[] = [];
  for (const path of ['/healthz', '/readyz', '/status', '/metrics', '/nope']) {
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    bodies.push(`${path} ${res.status} ${JSON.stringify([...res.headers])} ${await res.text()}`);
  }
  const post = await fetch(`http://127.0.0.1:${port}/status`, { method: 'POST', body: 'x' });
  bodies.push(`POST ${post.status} ${await post.text()}`);
  return bodies.join('\n');
}

function expectNoSecret(text: string, secrets: readonly string[]): void {
  for (const secret of secrets) {
    expect(text).not.toContain(secret);
    // Also not URL- or JSON-escaped.
    expect(text).not.toContain(encodeURIComponent(secret));
    expect(text).not.toContain(JSON.stringify(secret).slice(1, -1));
  }
}

async function stop(daemon: Running): Promise<number> {
  daemon.child.kill('SIGTERM');
  return daemon.exited;
}

describe('credentials stay out of logs, errors and endpoints', () => {
  it('a running daemon at trace level, with S3 failing in every way, never shows its secret key', async () => {
    const { proxy, dbPath, port, daemon } = await startProxiedDaemon(5, { LOG_LEVEL: 'trace' });
    const bodies: string[] = [];
    try {
      await waitFor('the first upload', () => daemon.logs().some((l) => l.msg === 'snapshot uploaded'));
      bodies.push(await scrapeAll(port));
      const faults = [
        { kind: 'error', status: 403, code: 'SignatureDoesNotMatch', message: 'The request signature we calculated does not match' },
        { kind: 'internal-error' },
        { kind: 'reset' },
      ] as const;
      const count = (msg: string): number => daemon.logs().filter((l) => l.msg === msg).length;
      for (const fault of faults) {
        const failuresBefore = count('sync failed; will retry');
        const recoveriesBefore = count('sync recovered');
        proxy.set(fault, { match: (r) => r.op === 'PutObject' });
        addRows(dbPath, 1);
        await waitFor(`a failure with ${fault.kind}`, async () => {
          const st = (await (await fetch(`http://127.0.0.1:${port}/status`)).json()) as { consecutiveFailures: number };
          return st.consecutiveFailures > 0 && count('sync failed; will retry') > failuresBefore;
        });
        bodies.push(await scrapeAll(port));
        proxy.pass();
        await waitFor('recovery', () => count('sync recovered') > recoveriesBefore);
      }
      expect(await stop(daemon)).toBe(0);
    } finally {
      daemon.child.kill('SIGKILL');
    }
    const everything = [daemon.stdout(), daemon.stderr(), ...bodies].join('\n');
    expect(everything).toContain('SignatureDoesNotMatch'); // the errors did reach the output
    expect(daemon.logs().some((l) => l.level === 'trace' || l.level === 'debug')).toBe(true);
    expectNoSecret(everything, [s3Info().secretAccessKey]);
  });

  it('wrong credentials with a session token: every command fails with exit 3, and neither value is printed', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 2);
    const env = {
      ...s3Env(bucket),
      AWS_SECRET_ACCESS_KEY: SECRET,
      AWS_SESSION_TOKEN: TOKEN,
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_HEALTH_PORT: '0',
      LOG_LEVEL: 'trace',
    };
    const outputs: string[] = [];
    for (const args of [['upload'], ['download', '--force'], ['backups'], ['verify'], ['run'], ['shutdown']]) {
      const result = await runCli(args, env);
      expect(result.code, `${args.join(' ')}: ${result.stderr}`).toBe(3);
      expect(result.stderr).toContain('hint:');
      outputs.push(result.stdout, result.stderr);
    }
    expectNoSecret(outputs.join('\n'), [SECRET, TOKEN]);
  });

  it('an unreachable endpoint: not ready, says why, and neither the secret nor the token shows anywhere', async () => {
    const dir = tempDir();
    const dbPath = join(dir, 'app', 'db.sqlite3');
    const port = await freePort();
    const deadPort = await freePort();
    const daemon = startCli(['run'], {
      ...s3Env('some-bucket'),
      DB_S3_ENDPOINT: `http://127.0.0.1:${deadPort}`,
      AWS_SECRET_ACCESS_KEY: SECRET,
      AWS_SESSION_TOKEN: TOKEN,
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_HEALTH_PORT: String(port),
      LOG_LEVEL: 'trace',
    });
    let bodies = '';
    try {
      await waitFor('a failed attempt to reach the store', () => daemon.stdout().includes('ECONNREFUSED'));
      bodies = await scrapeAll(port);
      expect(bodies).toContain('/readyz 503');
      // Not ready: the lease probe (or, with the lease off, the restore) is retrying.
      expect(bodies).toMatch(/"phase":"(waiting-for-lease|restoring)"/);
    } finally {
      await stop(daemon);
      daemon.child.kill('SIGKILL');
    }
    expect(existsSync(dbPath)).toBe(false);
    expectNoSecret([daemon.stdout(), daemon.stderr(), bodies].join('\n'), [SECRET, TOKEN]);
  });
});

describe('transport rules', () => {
  it('refuses credentials inside DB_S3_ENDPOINT without printing them (exit 2)', async () => {
    const result = await runCli(['upload'], {
      DB_S3_BUCKET: 'b',
      DB_S3_ENDPOINT: `https://AKIAE2E:${SECRET}@s3.example.com`,
      DB_LOCAL_PATH: '/nonexistent/db',
    });
    expect(result.code).toBe(2);
    expect(result.stderr).toContain('must not contain credentials');
    expectNoSecret(result.stdout + result.stderr, [SECRET, 'AKIAE2E']);
  });

  it('refuses plain http to another host unless DB_S3_ALLOW_HTTP=true; loopback http needs nothing', async () => {
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    const refused = await runCli(['download'], { ...s3Env('b'), DB_S3_ENDPOINT: 'http://s3.internal.example:9000', DB_LOCAL_PATH: dbPath });
    expect(refused.code).toBe(2);
    expect(refused.stderr).toContain('is plain http to another host');
    expect(refused.stderr).toContain('DB_S3_ALLOW_HTTP=true');
    expect(existsSync(dbPath)).toBe(false);

    // Allowed, the configuration passes and the command gets to its own work (no database here: exit 4).
    const allowed = await runCli(['upload'], {
      ...s3Env('b'),
      DB_S3_ENDPOINT: 'http://s3.internal.example:9000',
      DB_S3_ALLOW_HTTP: 'true',
      DB_LOCAL_PATH: dbPath,
    });
    expect(allowed.code).toBe(4);
    expect(allowed.stderr).toContain('the database does not exist');

    const { bucket } = await createBucket();
    createDatabase(dbPath, 3);
    const loopback = await runCli(['upload'], { ...s3Env(bucket), DB_LOCAL_PATH: dbPath });
    expect(loopback.code).toBe(0);
  });
});

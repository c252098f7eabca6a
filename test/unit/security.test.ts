/** Security settings and redaction: plain-http endpoints, SSE validation, secrets scrubbed from log lines. */
import { describe, expect, it } from 'vitest';
import { isLoopbackHost, loadConfig } from '../../src/config.js';
import { DbSyncError } from '../../src/errors.js';
import { createLogger, secretScrubber } from '../../src/logger.js';

const SECRET = 'wJalrXUtnFEMI/K7MDENG+bPxRfiCYzz9secret';
const TOKEN = 'IQoJb3JpZ2luX2VjEJr//////////wEaCXVzLWVhc3QtMSJHMEUCIQD+token';

/** The Usage error loadConfig throws for `env` (fails when it does not throw one). */
function problemsOf(env: Record<string, string>): string {
  try {
    loadConfig(env);
  } catch (error) {
    expect(error).toBeInstanceOf(DbSyncError);
    expect((error as DbSyncError).kind).toBe('Usage');
    return (error as DbSyncError).message;
  }
  throw new Error('expected loadConfig to throw');
}

describe('plain-http endpoints', () => {
  it.each(['http://127.0.0.1:7480', 'http://localhost:9000', 'http://127.10.0.3', 'http://[::1]:7480', 'https://s3.example.com'])(
    'accepts %s without DB_S3_ALLOW_HTTP',
    (endpoint) => {
      expect(loadConfig({ DB_S3_BUCKET: 'b', DB_S3_ENDPOINT: endpoint }).endpoint).toBe(endpoint);
    },
  );

  it.each(['http://minio:9000', 'http://10.0.0.5:7480', 'http://s3.example.com', 'http://127.0.0.1.nip.io'])(
    'refuses %s unless DB_S3_ALLOW_HTTP=true, naming the fix',
    (endpoint) => {
      const message = problemsOf({ DB_S3_BUCKET: 'b', DB_S3_ENDPOINT: endpoint });
      expect(message).toContain(`DB_S3_ENDPOINT="${endpoint}" is plain http`);
      expect(message).toContain('DB_S3_ALLOW_HTTP=true');
      expect(loadConfig({ DB_S3_BUCKET: 'b', DB_S3_ENDPOINT: endpoint, DB_S3_ALLOW_HTTP: 'true' }).allowHttp).toBe(true);
      expect(loadConfig({ DB_S3_BUCKET: 'b' }, { endpoint, 'allow-http': true }).endpoint).toBe(endpoint);
    },
  );

  it('tells loopback from look-alikes', () => {
    expect(isLoopbackHost('LOCALHOST')).toBe(true);
    expect(isLoopbackHost('127.255.255.254')).toBe(true);
    expect(isLoopbackHost('localhost.example.com')).toBe(false);
    expect(isLoopbackHost('128.0.0.1')).toBe(false);
    expect(isLoopbackHost('[::2]')).toBe(false);
  });

  it.each([
    `https://AKIAEXAMPLE:${SECRET}@s3.example.com`,
    'https://AKIAEXAMPLE:pass@s3.example.com:443/x',
    'http://AKIAEXAMPLE@minio:9000',
  ])('refuses credentials in the endpoint without repeating them: %s', (endpoint) => {
    const message = problemsOf({ DB_S3_BUCKET: 'b', DB_S3_ENDPOINT: endpoint });
    expect(message).toContain('must not contain credentials');
    expect(message).toMatch(/https?:\/\/\*\*\*@/);
    expect(message).not.toContain(SECRET);
    expect(message).not.toContain('AKIAEXAMPLE');
    expect(message).not.toContain('pass@');
  });
});

describe('server-side encryption settings', () => {
  it('is unset by default (the bucket default applies)', () => {
    const config = loadConfig({ DB_S3_BUCKET: 'b' });
    expect(config.sse).toBeUndefined();
    expect(config.sseKmsKeyId).toBeUndefined();
  });

  it.each([
    ['AES256', 'AES256'],
    ['aes256', 'AES256'],
    ['aws:kms', 'aws:kms'],
    ['AWS:KMS', 'aws:kms'],
  ])('reads DB_S3_SSE=%s as %s', (raw, mode) => {
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_S3_SSE: raw }).sse).toBe(mode);
  });

  it('takes a KMS key with aws:kms, from env or flag', () => {
    const arn = 'arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab';
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_S3_SSE: 'aws:kms', DB_S3_SSE_KMS_KEY_ID: arn }).sseKmsKeyId).toBe(arn);
    expect(loadConfig({ DB_S3_BUCKET: 'b' }, { sse: 'aws:kms', 'sse-kms-key-id': 'alias/db' }).sseKmsKeyId).toBe('alias/db');
  });

  it('lists every encryption problem at once', () => {
    const message = problemsOf({
      DB_S3_BUCKET: 'b',
      DB_S3_SSE: 'AES256',
      DB_S3_SSE_KMS_KEY_ID: 'alias/db',
      DB_S3_ENDPOINT: 'http://minio:9000',
    });
    expect(message).toContain('DB_S3_SSE_KMS_KEY_ID is set but DB_S3_SSE is AES256');
    expect(message).toContain('plain http');
    expect(problemsOf({ DB_S3_BUCKET: 'b', DB_S3_SSE_KMS_KEY_ID: 'alias/db' })).toContain('DB_S3_SSE is unset');
    expect(problemsOf({ DB_S3_BUCKET: 'b', DB_S3_SSE: 'kms' })).toContain('DB_S3_SSE="kms" must be AES256');
    expect(problemsOf({ DB_SYNC_REPLICA_DIR: '/tmp/r', DB_S3_SSE: 'AES256' })).toContain('applies only to S3');
  });
});

describe('secrets in log lines', () => {
  function capture(scrub?: (text: string) => string): { lines: () => string; log: ReturnType<typeof createLogger> } {
    let out = '';
    const log = createLogger({ level: 'trace', destination: { write: (s: string) => void (out += s) }, scrub });
    return { lines: () => out, log };
  }

  it('redacts credential fields by path, at the top level and one level down', () => {
    const { lines, log } = capture();
    log.info({ secretAccessKey: SECRET, credentials: { secretAccessKey: SECRET, sessionToken: TOKEN } }, 'top');
    log.info({ client: { secretAccessKey: SECRET, sessionToken: TOKEN, authorization: `AWS4 ${SECRET}` } }, 'nested');
    log.error({ err: { message: 'x', $response: { headers: { 'x-amz-security-token': TOKEN } } } }, 'sdk error');
    expect(lines()).not.toContain(SECRET);
    expect(lines()).not.toContain(TOKEN);
    expect(lines()).toContain('[redacted]');
  });

  it('scrubs known secret values wherever they appear, messages and deep fields included', () => {
    const scrub = secretScrubber([SECRET, TOKEN, undefined]);
    const { lines, log } = capture(scrub);
    log.warn({ a: { b: { c: { d: `k=${SECRET}` } } }, list: [TOKEN] }, `failed with ${SECRET}`);
    log.info({ quoted: `"${SECRET}"` }, 'quoted');
    expect(lines()).not.toContain(SECRET);
    expect(lines()).not.toContain(TOKEN);
    expect(lines().match(/\[redacted\]/g)?.length).toBe(4);
    for (const line of lines().trim().split('\n')) expect(() => JSON.parse(line) as unknown).not.toThrow();
  });

  it('ignores values too short to scrub safely, and scrubs nothing without secrets', () => {
    expect(secretScrubber(['short', undefined])('a short text')).toBe('a short text');
    expect(secretScrubber([])('anything')).toBe('anything');
    expect(secretScrubber(['abcdefgh', 'abcdefghijkl'])('x abcdefghijkl y abcdefgh')).toBe('x [redacted] y [redacted]');
  });
});

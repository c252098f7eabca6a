import { describe, expect, it } from 'vitest';
import {
  DEFAULT_HEALTH_HOST,
  DEFAULT_HEALTH_PORT,
  DEFAULT_INTERVAL_MS,
  DEFAULT_KEY,
  DEFAULT_LOCAL_PATH,
  DEFAULT_SHUTDOWN_TIMEOUT_MS,
  ENV_VARS,
  loadConfig,
  MAX_DURATION_MS,
  parseDuration,
  SETTINGS,
  type Setting,
} from '../../src/config.js';
import { DbSyncError, ExitCode } from '../../src/errors.js';

/** Run loadConfig and return the Usage error it throws (fails the test when it does not throw one). */
function usageError(...args: Parameters<typeof loadConfig>): DbSyncError {
  try {
    loadConfig(...args);
  } catch (error) {
    expect(error).toBeInstanceOf(DbSyncError);
    const e = error as DbSyncError;
    expect(e.kind).toBe('Usage');
    expect(e.exitCode).toBe(ExitCode.Usage);
    expect(e.exitCode).toBe(2);
    return e;
  }
  throw new Error('expected loadConfig to throw');
}

describe('parseDuration', () => {
  it.each([
    ['300', 300_000],
    ['30s', 30_000],
    ['5m', 300_000],
    ['1.5h', 5_400_000],
    ['500ms', 500],
    ['2H', 7_200_000],
    [' 10s ', 10_000],
  ])('parses %j as %i ms', (text, ms) => {
    expect(parseDuration(text)).toBe(ms);
  });

  it.each(['abc', '-1', '5 minutes', '', '5d', '1e3', 's'])('rejects %j', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('loadConfig', () => {
  it('applies the defaults', () => {
    const config = loadConfig({ DB_S3_BUCKET: 'b' });
    expect(config).toMatchObject({
      bucket: 'b',
      key: DEFAULT_KEY,
      localPath: DEFAULT_LOCAL_PATH,
      replicaDir: undefined,
      intervalMs: DEFAULT_INTERVAL_MS,
      healthPort: DEFAULT_HEALTH_PORT,
      healthHost: DEFAULT_HEALTH_HOST,
      shutdownTimeoutMs: DEFAULT_SHUTDOWN_TIMEOUT_MS,
      endpoint: undefined,
      forcePathStyle: false,
      region: undefined,
      integrityCheck: 'quick',
      logLevel: 'info',
    });
    expect(Object.isFrozen(config)).toBe(true);
  });

  it('reads every setting from the environment', () => {
    const config = loadConfig({
      DB_S3_BUCKET: 'bucket-a',
      DB_S3_KEY: 'prod/app.db',
      DB_LOCAL_PATH: '/data/app.db',
      DB_SYNC_INTERVAL: '30s',
      DB_SYNC_HEALTH_PORT: '9000',
      DB_SYNC_HEALTH_HOST: '0.0.0.0',
      DB_SYNC_SHUTDOWN_TIMEOUT: '10',
      DB_S3_ENDPOINT: 'http://127.0.0.1:7480',
      DB_S3_FORCE_PATH_STYLE: 'yes',
      DB_S3_REGION: 'eu-west-1',
      DB_SYNC_INTEGRITY_CHECK: 'FULL',
      LOG_LEVEL: 'debug',
    });
    expect(config).toMatchObject({
      bucket: 'bucket-a',
      key: 'prod/app.db',
      localPath: '/data/app.db',
      intervalMs: 30_000,
      healthPort: 9000,
      healthHost: '0.0.0.0',
      shutdownTimeoutMs: 10_000,
      endpoint: 'http://127.0.0.1:7480',
      forcePathStyle: true,
      region: 'eu-west-1',
      integrityCheck: 'full',
      logLevel: 'debug',
    });
  });

  it('lists every problem together in one Usage error', () => {
    const error = usageError({
      DB_S3_BUCKET: 'b',
      DB_SYNC_INTERVAL: 'abc',
      DB_SYNC_HEALTH_PORT: '70000',
      DB_S3_FORCE_PATH_STYLE: 'maybe',
      DB_SYNC_INTEGRITY_CHECK: 'thorough',
      LOG_LEVEL: 'loud',
    });
    expect(error.message).toContain('DB_SYNC_INTERVAL="abc"');
    expect(error.message).toContain('DB_SYNC_HEALTH_PORT="70000"');
    expect(error.message).toContain('DB_S3_FORCE_PATH_STYLE="maybe"');
    expect(error.message).toContain('DB_SYNC_INTEGRITY_CHECK="thorough"');
    expect(error.message).toContain('LOG_LEVEL="loud"');
    expect(error.message.split('\n').filter((line) => line.startsWith('  - '))).toHaveLength(5);
    expect(error.hint).toBeTruthy();
  });

  it('reads the continuous-replication settings, with their defaults', () => {
    expect(loadConfig({ DB_S3_BUCKET: 'b' })).toMatchObject({
      continuous: 'auto',
      segmentIntervalMs: 1_000,
      baseIntervalMs: 3_600_000,
      spoolMaxBytes: undefined,
    });
    expect(
      loadConfig({
        DB_S3_BUCKET: 'b',
        DB_SYNC_CONTINUOUS: 'OFF',
        DB_SYNC_SEGMENT_INTERVAL: '250ms',
        DB_SYNC_BASE_INTERVAL: '30m',
        DB_SYNC_SPOOL_MAX: '512MiB',
      }),
    ).toMatchObject({ continuous: 'off', segmentIntervalMs: 250, baseIntervalMs: 1_800_000, spoolMaxBytes: 512 * 1024 * 1024 });
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_SYNC_SPOOL_MAX: '2000000' }).spoolMaxBytes).toBe(2_000_000);
  });

  it('refuses invalid continuous-replication settings, each named, in one Usage error (exit 2)', () => {
    const message = usageError({
      DB_S3_BUCKET: 'b',
      DB_SYNC_CONTINUOUS: 'sometimes',
      DB_SYNC_SEGMENT_INTERVAL: '10ms',
      DB_SYNC_BASE_INTERVAL: 'hourly',
      DB_SYNC_SPOOL_MAX: '100KiB',
    }).message;
    expect(message).toContain('DB_SYNC_CONTINUOUS="sometimes" must be one of: auto, off');
    expect(message).toMatch(/DB_SYNC_SEGMENT_INTERVAL="10ms" is too short/);
    expect(message).toMatch(/DB_SYNC_BASE_INTERVAL="hourly" is not a duration/);
    expect(message).toMatch(/DB_SYNC_SPOOL_MAX="100KiB" is too small; the minimum is 1 MiB/);
    expect(usageError({ DB_S3_BUCKET: 'b', DB_SYNC_SPOOL_MAX: 'lots' }).message).toMatch(/DB_SYNC_SPOOL_MAX="lots" is not a size/);
  });

  it('reads DB_SYNC_SNAPSHOT_PACE as a percentage or a fraction, 25% by default, and refuses the rest (exit 2)', () => {
    expect(loadConfig({ DB_S3_BUCKET: 'b' }).snapshotPace).toBe(0.25);
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_SYNC_SNAPSHOT_PACE: '50%' }).snapshotPace).toBe(0.5);
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_SYNC_SNAPSHOT_PACE: '0.1' }).snapshotPace).toBe(0.1);
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_SYNC_SNAPSHOT_PACE: '100%' }).snapshotPace).toBe(1);
    expect(loadConfig({ DB_S3_BUCKET: 'b' }, { 'snapshot-pace': '1' }).snapshotPace).toBe(1);
    for (const raw of ['0', '0%', '150%', '2', 'half', '-0.5', '25 percent']) {
      const error = usageError({ DB_S3_BUCKET: 'b', DB_SYNC_SNAPSHOT_PACE: raw });
      expect(error.exitCode).toBe(ExitCode.Usage);
      expect(error.message).toContain(
        `DB_SYNC_SNAPSHOT_PACE="${raw}" must be a share of time above 0 and at most 100%, such as 25% or 0.25`,
      );
    }
  });

  it('rejects an interval below the minimum', () => {
    expect(usageError({ DB_S3_BUCKET: 'b', DB_SYNC_INTERVAL: '500ms' }).message).toContain('too short');
  });

  it('accepts durations up to 2^31-1 ms and refuses longer ones, for every duration setting (a Node timer cannot wait longer)', () => {
    const names = [
      'DB_SYNC_INTERVAL',
      'DB_SYNC_SHUTDOWN_TIMEOUT',
      'DB_SYNC_RESTORE_TIMEOUT',
      'DB_SYNC_CHILD_STOP_TIMEOUT',
      'DB_SYNC_LEASE_TTL',
    ];
    const at = (value: string): Record<string, string> => Object.fromEntries([['DB_S3_BUCKET', 'b'], ...names.map((n) => [n, value])]);
    const config = loadConfig(at(`${MAX_DURATION_MS}ms`));
    expect([config.intervalMs, config.shutdownTimeoutMs, config.restoreTimeoutMs, config.childStopTimeoutMs, config.leaseTtlMs]).toEqual(
      names.map(() => MAX_DURATION_MS),
    );
    const error = usageError(at(`${MAX_DURATION_MS + 1}ms`));
    for (const name of names) expect(error.message).toContain(`${name}="${MAX_DURATION_MS + 1}ms" is too long; the maximum is 596h`);
    expect(
      usageError(at('600h'))
        .message.split('\n')
        .filter((line) => line.includes('too long')),
    ).toHaveLength(names.length);
  });

  it('reads DB_SYNC_RESTORE_TIMEOUT=0 and 0s alike (keep trying)', () => {
    for (const zero of ['0', '0s', '0ms', '0m'])
      expect(loadConfig({ DB_S3_BUCKET: 'b', DB_SYNC_RESTORE_TIMEOUT: zero }).restoreTimeoutMs).toBe(0);
    expect(usageError({ DB_S3_BUCKET: 'b', DB_SYNC_RESTORE_TIMEOUT: '500ms' }).message).toContain('the minimum is 1s (or 0: keep trying)');
  });

  it('lets flags override env vars, and names the flag in a problem', () => {
    const config = loadConfig(
      { DB_S3_BUCKET: 'env-bucket', DB_SYNC_INTERVAL: '5m', DB_S3_FORCE_PATH_STYLE: 'false' },
      { bucket: 'flag-bucket', interval: '45s', 'force-path-style': true },
    );
    expect(config.bucket).toBe('flag-bucket');
    expect(config.intervalMs).toBe(45_000);
    expect(config.forcePathStyle).toBe(true);

    const error = usageError({ DB_S3_BUCKET: 'b', DB_SYNC_INTERVAL: '5m' }, { interval: 'soon' });
    expect(error.message).toContain('(from --interval)');
  });

  it('falls back from DB_S3_REGION to AWS_REGION, then AWS_DEFAULT_REGION', () => {
    expect(loadConfig({ DB_S3_BUCKET: 'b', AWS_REGION: 'ap-south-1' }).region).toBe('ap-south-1');
    expect(loadConfig({ DB_S3_BUCKET: 'b', AWS_DEFAULT_REGION: 'ca-central-1' }).region).toBe('ca-central-1');
    expect(loadConfig({ DB_S3_BUCKET: 'b', AWS_REGION: 'ap-south-1', DB_S3_REGION: 'eu-north-1' }).region).toBe('eu-north-1');
    expect(loadConfig({ DB_S3_BUCKET: 'b', AWS_REGION: 'ap-south-1', AWS_DEFAULT_REGION: 'ca-central-1' }).region).toBe('ap-south-1');
  });

  it('requires a bucket unless a replica directory is set', () => {
    expect(usageError({}).message).toContain('DB_S3_BUCKET is not set');
    expect(usageError({ DB_S3_BUCKET: '   ' }).message).toContain('DB_S3_BUCKET is not set');
    const config = loadConfig({ DB_SYNC_REPLICA_DIR: '/var/replica' });
    expect(config.replicaDir).toBe('/var/replica');
    expect(config.bucket).toBeUndefined();
    expect(loadConfig({}, {}, { needsReplica: false }).bucket).toBeUndefined();
  });

  it('refuses both a bucket and a replica directory', () => {
    expect(usageError({ DB_S3_BUCKET: 'b', DB_SYNC_REPLICA_DIR: '/r' }).message).toContain('both set');
  });

  it.each([
    ['/x', 'must not start with "/"'],
    ['dir/', 'names a folder'],
    ['k'.repeat(901), 'too long'],
  ])('rejects the key %j', (key, problem) => {
    expect(usageError({ DB_S3_BUCKET: 'b', DB_S3_KEY: key }).message).toContain(problem);
  });

  it('accepts a key with folders', () => {
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_S3_KEY: 'a/b/c.sqlite3' }).key).toBe('a/b/c.sqlite3');
  });

  it.each(['https://s3.example.com', 'http://127.0.0.1:7480', 'http://minio:9000/'])('accepts the endpoint %j', (endpoint) => {
    // Plain http to a non-loopback host also needs DB_S3_ALLOW_HTTP (test/unit/security.test.ts).
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_S3_ENDPOINT: endpoint, DB_S3_ALLOW_HTTP: 'true' }).endpoint).toBe(endpoint);
  });

  it.each([
    ['not a url', 'is not a URL'],
    ['127.0.0.1:7480', 'is not a URL'],
    ['localhost:7480', 'must be an http:// or https:// URL'],
    ['ftp://example.com', 'must be an http:// or https:// URL'],
  ])('rejects the endpoint %j', (endpoint, problem) => {
    expect(usageError({ DB_S3_BUCKET: 'b', DB_S3_ENDPOINT: endpoint }).message).toContain(problem);
  });

  it('accepts health port 0 (disabled) and rejects non-integers', () => {
    expect(loadConfig({ DB_S3_BUCKET: 'b', DB_SYNC_HEALTH_PORT: '0' }).healthPort).toBe(0);
    expect(usageError({ DB_S3_BUCKET: 'b', DB_SYNC_HEALTH_PORT: '80.5' }).message).toContain('is not a port');
  });
});

describe('ENV_VARS', () => {
  it('contains every env var and fallback of SETTINGS', () => {
    for (const s of SETTINGS as readonly Setting[]) {
      expect(ENV_VARS).toContain(s.env);
      for (const fallback of s.envFallbacks ?? []) expect(ENV_VARS).toContain(fallback);
    }
    expect(ENV_VARS).toContain('AWS_REGION');
    expect(new Set(ENV_VARS).size).toBe(ENV_VARS.length);
  });

  it('has exactly one setting per Config field', () => {
    const fields = SETTINGS.map((s) => s.field);
    expect(new Set(fields).size).toBe(fields.length);
    expect(Object.keys(loadConfig({ DB_S3_BUCKET: 'b' })).sort()).toEqual([...fields].sort());
  });
});

/**
 * Configuration: environment variables and command-line flags become one frozen {@link Config}.
 *
 * Every setting is declared once in {@link SETTINGS}: its env var, its flag, its default and its parser.
 * The README table, the Terraform tests and `--help` all read that table, so a name can never drift.
 * Flags win over env vars. Parsing collects every problem and reports them together in one
 * {@link DbSyncError} of kind `Usage` (exit 2), before anything is touched.
 */
import { DbSyncError } from './errors.js';

export const DEFAULT_KEY = 'db.sqlite3';
export const DEFAULT_LOCAL_PATH = '/app/db.sqlite3';
export const DEFAULT_INTERVAL_MS = 5 * 60_000;
/** Well inside ECS's default 30 s stop timeout, leaving room for the app to stop first. */
export const DEFAULT_SHUTDOWN_TIMEOUT_MS = 20_000;
/** `exec`: how long the app gets to exit after the forwarded SIGTERM/SIGINT before it is sent SIGKILL. */
export const DEFAULT_CHILD_STOP_TIMEOUT_MS = 10_000;
export const DEFAULT_HEALTH_PORT = 8790;
/** Continuous replication's defaults (docs/continuous-replication.md, "Settings"). */
export const DEFAULT_SEGMENT_INTERVAL_MS = 1_000;
export const MIN_SEGMENT_INTERVAL_MS = 100;
export const DEFAULT_BASE_INTERVAL_MS = 60 * 60_000;
export const MIN_SPOOL_MAX_BYTES = 64 * 1024 * 1024;
/** An explicit DB_SYNC_SPOOL_MAX may go lower than the default's floor (small disks, tests), not below this. */
export const MIN_EXPLICIT_SPOOL_MAX_BYTES = 1024 * 1024;
/** Loopback by default: the ECS health check runs inside the task, and nothing else should reach it. */
export const DEFAULT_HEALTH_HOST = '127.0.0.1';
export const MIN_INTERVAL_MS = 1_000;
/** Retention defaults: like the old backup scripts' 7 days, and never fewer than the last 10 backups. */
export const DEFAULT_KEEP_BACKUPS = 10;
/**
 * Ranged GETs in flight per download. One S3 connection tops out around 50-100 MB/s on AWS (per-connection
 * TCP and request limits, far below an instance's NIC); the AWS CLI runs 10. Eight 8 MiB ranges fill a
 * 5-10 Gbit/s link at ~1 MiB of buffer each. On a CPU-bound loopback server fewer are as fast.
 */
export const DEFAULT_DOWNLOAD_CONCURRENCY = 8;
export const DEFAULT_KEEP_BACKUPS_DAYS = 7;

/**
 * Share of the time a snapshot taken while the app runs may work (pacer.ts): a quarter. Measured on this
 * project's 2-vCPU machine with 200 inserts/s into a 200 MB WAL database (bench/RESULTS.md, section 4, two full
 * runs of 2026-12-03, both alternating): the app's p99 commit latency during snapshots was x4.52 and x4.46 of no
 * sync unpaced, x2.87 and x1.92 paced; the snapshot (copy, check, hash) took 5.6 s instead of 1.2 s, which an
 * interval of minutes and an hourly base do not notice.
 */
export const DEFAULT_SNAPSHOT_PACE = 0.25;

/** Lease: a successor takes over a silent owner's lease after this long; renewed every third of it. */
export const DEFAULT_LEASE_TTL_MS = 30_000;
export const MIN_LEASE_TTL_MS = 2_000;
/**
 * The longest duration any setting accepts: 2^31−1 ms (about 24.8 days, 596 h). Node runs a longer timer
 * after 1 ms instead (TimeoutOverflowWarning), so `600h` would spin the sync loop, fire a deadline at
 * once or SIGKILL the app at once. Refused (exit 2) rather than clamped: a value that large is a typo
 * or a wish ("never") that db-sync cannot honour as written.
 */
export const MAX_DURATION_MS = 2 ** 31 - 1;
/** {@link MAX_DURATION_MS} as the settings' messages write it. */
const MAX_DURATION_TEXT = '596h (2147483647 ms, about 24.8 days)';
/**
 * Waiting for the lease longer than this is a stalled deploy (a rolling deploy that starts the new task
 * before stopping the old one): matches the terraform health check's 60 s start period.
 */
export const DEFAULT_LEASE_WAIT_WARN_MS = 60_000;
export const DEFAULT_CLOUDWATCH_NAMESPACE = 'db-sync';

export type IntegrityCheck = 'quick' | 'full' | 'none';
/**
 * A database on the volume with no sync history (no state file, or one for another key) while the store
 * holds a copy: `remote` restores the remote copy and keeps the local file as `.backup` (the old script's
 * behaviour); `local` keeps the local file and uploads it over KEY.
 */
export type OnUnknownHistory = 'remote' | 'local';
/** `auto`: enforce where the store enforces conditional writes, else warn; `required`: refuse to start without; `off`. */
export type LeaseMode = 'auto' | 'required' | 'off';
/** Continuous replication: `auto` for WAL databases (rollback-journal ones keep interval snapshots), `off` for none. */
export type ContinuousMode = 'auto' | 'off';
/** Server-side encryption db-sync asks S3 for: SSE-S3 (`AES256`) or SSE-KMS (`aws:kms`). */
export type SseMode = 'AES256' | 'aws:kms';
/** Bucket versioning at start: `warn` when it is off, `required` refuses to start (exit 2), `off` skips the check. */
export type VersioningCheck = 'warn' | 'required' | 'off';
export type LogLevel = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal' | 'silent';

export interface Config {
  /** S3 bucket. Required unless {@link replicaDir} is set. */
  readonly bucket: string | undefined;
  /** Object key of the latest snapshot; backups live at `KEY.backup.YYYYMMDD_HHMMSS`. */
  readonly key: string;
  /** Path of the live SQLite database. */
  readonly localPath: string;
  /** When set, replicate into this local directory instead of S3 (development, demos, tests, NFS/EFS). */
  readonly replicaDir: string | undefined;
  /** How often to look for changes and upload a snapshot. */
  readonly intervalMs: number;
  /** Continuous replication of WAL databases (docs/continuous-replication.md): `auto` = on for WAL databases, `off`. */
  readonly continuous: ContinuousMode;
  /** Longest a captured commit waits before its segment is sealed and shipped. */
  readonly segmentIntervalMs: number;
  /** A new base after this long when segments were shipped since the last one. */
  readonly baseIntervalMs: number;
  /** Local spool cap while the store is unreachable; undefined = 25 % of the database, at least 64 MiB. */
  readonly spoolMaxBytes: number | undefined;
  /** Health server port; 0 disables the server. */
  readonly healthPort: number;
  readonly healthHost: string;
  /** Deadline for the final snapshot + upload after the first SIGTERM/SIGINT. */
  readonly shutdownTimeoutMs: number;
  /** `run`/`exec`: give up preparing the database after this long while the store is unreachable; 0 = never. */
  readonly restoreTimeoutMs: number;
  /** `exec`: deadline for the app to exit after the forwarded stop signal; then it gets SIGKILL. */
  readonly childStopTimeoutMs: number;
  /** Custom S3 endpoint (MinIO, R2, Ceph RGW, LocalStack). */
  readonly endpoint: string | undefined;
  readonly forcePathStyle: boolean;
  readonly region: string | undefined;
  /** Plain http:// to a non-loopback endpoint is refused unless this is set (credentials' session token and data in clear). */
  readonly allowHttp: boolean;
  /** Server-side encryption on every object db-sync writes (put, multipart, copy); undefined = the bucket's default. */
  readonly sse: SseMode | undefined;
  /** KMS key for `aws:kms` (id, ARN or alias); undefined = the account's AWS-managed key for S3. */
  readonly sseKmsKeyId: string | undefined;
  /** Integrity check run on every snapshot and every restore. */
  readonly integrityCheck: IntegrityCheck;
  /** run, exec, startup: which copy wins when the local database has no sync history. */
  readonly onUnknownHistory: OnUnknownHistory;
  /** Ranged GETs in flight per download from S3. */
  readonly downloadConcurrency: number;
  /** run, exec: share of the time a snapshot or base taken while the app runs may work (1: unpaced). */
  readonly snapshotPace: number;
  /** Retention: backups among the newest this many are kept whatever their age. */
  readonly keepBackups: number;
  /** Retention: backups younger than this many days are kept whatever their count. */
  readonly keepBackupsDays: number;
  /** Single-writer lease for `run` and `exec`. */
  readonly leaseMode: LeaseMode;
  /** Bucket of the lease object; undefined = the database's bucket. */
  readonly leaseBucket: string | undefined;
  /** Key of the lease object; undefined = `KEY.lease`. */
  readonly leaseKey: string | undefined;
  readonly leaseTtlMs: number;
  /** Waiting for the lease longer than this logs `LEASE WAIT STALLED` (a deploy that starts before it stops). */
  readonly leaseWaitWarnMs: number;
  /** Check the bucket's versioning at start (run, exec). */
  readonly versioningCheck: VersioningCheck;
  /** Write CloudWatch Embedded Metric Format lines to stdout (run, exec). */
  readonly cloudwatchMetrics: boolean;
  /** CloudWatch namespace of those metrics. */
  readonly cloudwatchNamespace: string;
  readonly logLevel: LogLevel;
}

type Env = Readonly<Record<string, string | undefined>>;
type Parsed<T> = { ok: true; value: T } | { ok: false; problem: string };

/** One configuration setting: where it comes from and how it is parsed. */
export interface Setting<K extends keyof Config = keyof Config> {
  readonly field: K;
  /** Environment variable name (the primary interface, as in an ECS task definition). */
  readonly env: string;
  /** Extra env vars read when {@link env} is unset, in order (e.g. `AWS_REGION`). */
  readonly envFallbacks?: readonly string[];
  /** Long flag without dashes; every flag mirrors an env var. */
  readonly flag: string;
  /** Whether the flag takes no value (`--force-path-style`). */
  readonly boolean?: boolean;
  readonly description: string;
  /** Default as shown in docs. */
  readonly defaultText: string;
  readonly parse: (raw: string | undefined) => Parsed<Config[K]>;
}

const ok = <T>(value: T): Parsed<T> => ({ ok: true, value });
const bad = <T>(problem: string): Parsed<T> => ({ ok: false, problem });

/**
 * Parse a duration: plain seconds (`300`), or a number with a unit: `ms`, `s`, `m`, `h` (`30s`, `5m`, `1.5h`).
 * Returns milliseconds, or undefined when the text is not a duration.
 */
export function parseDuration(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$/i.exec(text);
  if (!match) return undefined;
  const amount = Number(match[1]);
  const unit = (match[2] ?? 's').toLowerCase();
  const factor = unit === 'ms' ? 1 : unit === 's' ? 1_000 : unit === 'm' ? 60_000 : 3_600_000;
  return Math.round(amount * factor);
}

/**
 * A duration setting between `minMs` and {@link MAX_DURATION_MS}; with `zeroMeans`, a zero in any unit
 * (`0`, `0s`, `0ms`) is also accepted, and means what that text says.
 */
function duration(name: string, fallbackMs: number, minMs: number, zeroMeans?: string) {
  return (raw: string | undefined): Parsed<number> => {
    if (raw === undefined || raw.trim() === '') return ok(fallbackMs);
    const ms = parseDuration(raw);
    if (ms === undefined) return bad(`${name}="${raw}" is not a duration; use seconds (300) or a unit (30s, 5m, 1h)`);
    if (ms === 0 && zeroMeans !== undefined) return ok(0);
    if (ms < minMs) {
      return bad(`${name}="${raw}" is too short; the minimum is ${minMs / 1000}s${zeroMeans ? ` (or 0: ${zeroMeans})` : ''}`);
    }
    if (ms > MAX_DURATION_MS) return bad(`${name}="${raw}" is too long; the maximum is ${MAX_DURATION_TEXT}`);
    return ok(ms);
  };
}

function optionalString(raw: string | undefined): Parsed<string | undefined> {
  return ok(raw === undefined || raw.trim() === '' ? undefined : raw.trim());
}

function stringWithDefault(fallback: string) {
  return (raw: string | undefined): Parsed<string> => ok(raw === undefined || raw.trim() === '' ? fallback : raw.trim());
}

function booleanValue(name: string) {
  return (raw: string | undefined): Parsed<boolean> => {
    if (raw === undefined || raw.trim() === '') return ok(false);
    const v = raw.trim().toLowerCase();
    if (['1', 'true', 'yes', 'on'].includes(v)) return ok(true);
    if (['0', 'false', 'no', 'off'].includes(v)) return ok(false);
    return bad(`${name}="${raw}" is not a boolean; use true or false`);
  };
}

function oneOf<T extends string>(name: string, values: readonly T[], fallback: T) {
  return (raw: string | undefined): Parsed<T> => {
    if (raw === undefined || raw.trim() === '') return ok(fallback);
    const v = raw.trim().toLowerCase() as T;
    return values.includes(v) ? ok(v) : bad(`${name}="${raw}" must be one of: ${values.join(', ')}`);
  };
}

function port(name: string, fallback: number) {
  return (raw: string | undefined): Parsed<number> => {
    if (raw === undefined || raw.trim() === '') return ok(fallback);
    const n = Number(raw);
    if (!Number.isInteger(n) || n < 0 || n > 65_535) {
      return bad(`${name}="${raw}" is not a port; use 1-65535, or 0 to disable the health server`);
    }
    return ok(n);
  };
}

function count(name: string, fallback: number) {
  return (raw: string | undefined): Parsed<number> => {
    if (raw === undefined || raw.trim() === '') return ok(fallback);
    const n = Number(raw);
    return Number.isInteger(n) && n >= 0 ? ok(n) : bad(`${name}="${raw}" must be a whole number, 0 or more`);
  };
}

function positiveCount(name: string, fallback: number, max: number) {
  return (raw: string | undefined): Parsed<number> => {
    if (raw === undefined || raw.trim() === '') return ok(fallback);
    const n = Number(raw);
    return Number.isInteger(n) && n >= 1 && n <= max ? ok(n) : bad(`${name}="${raw}" must be a whole number from 1 to ${max}`);
  };
}

/** A share of time, `25%` or `0.25`: more than 0, at most 1 (100%). */
function share(name: string, fallback: number) {
  return (raw: string | undefined): Parsed<number> => {
    if (raw === undefined || raw.trim() === '') return ok(fallback);
    const match = /^\s*(\d+(?:\.\d+)?)\s*(%?)\s*$/.exec(raw);
    const n = match ? Number(match[1]) / (match[2] ? 100 : 1) : Number.NaN;
    return n > 0 && n <= 1 ? ok(n) : bad(`${name}="${raw}" must be a share of time above 0 and at most 100%, such as 25% or 0.25`);
  };
}

/** A byte size: plain bytes or a number with a unit (`KB`, `MB`, `GB`, `KiB`, `MiB`, `GiB`); at least `minBytes`. */
export function parseSize(text: string): number | undefined {
  const match = /^\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|kib|mib|gib)?\s*$/i.exec(text);
  if (!match) return undefined;
  const unit = (match[2] ?? 'b').toLowerCase();
  const factor: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3 };
  return Math.round(Number(match[1]) * factor[unit]!);
}

function optionalSize(name: string, minBytes: number) {
  return (raw: string | undefined): Parsed<number | undefined> => {
    if (raw === undefined || raw.trim() === '') return ok(undefined);
    const bytes = parseSize(raw);
    if (bytes === undefined) return bad(`${name}="${raw}" is not a size; use bytes or a unit (512MiB, 2GiB, 100MB)`);
    if (bytes < minBytes) return bad(`${name}="${raw}" is too small; the minimum is ${minBytes / 1024 ** 2} MiB`);
    return ok(bytes);
  };
}

function s3Key(raw: string | undefined): Parsed<string> {
  const key = raw === undefined || raw.trim() === '' ? DEFAULT_KEY : raw.trim();
  if (key.startsWith('/')) return bad(`DB_S3_KEY="${key}" must not start with "/"; S3 keys are relative to the bucket`);
  if (key.endsWith('/')) return bad(`DB_S3_KEY="${key}" names a folder; give the object name, e.g. "${key}db.sqlite3"`);
  if (Buffer.byteLength(key) > 900) return bad('DB_S3_KEY is too long; S3 keys are at most 1024 bytes with room for suffixes');
  return ok(key);
}

function endpointUrl(raw: string | undefined): Parsed<string | undefined> {
  if (raw === undefined || raw.trim() === '') return ok(undefined);
  // The endpoint is shown in logs and /status, so credentials in it (user:password@) are refused, and no
  // message here repeats them: a secret may hold "/" or "@", which also makes the URL unparsable.
  const shown = raw.trim().replace(/^([a-z][a-z0-9+.-]*:\/\/)[^?#]*@/i, '$1***@');
  if (shown !== raw.trim()) {
    return bad(`DB_S3_ENDPOINT="${shown}" must not contain credentials (user:password@); db-sync takes them only from the AWS SDK chain`);
  }
  try {
    const url = new URL(raw.trim());
    if (url.protocol !== 'http:' && url.protocol !== 'https:') {
      return bad(`DB_S3_ENDPOINT="${raw}" must be an http:// or https:// URL`);
    }
    return ok(raw.trim());
  } catch {
    return bad(`DB_S3_ENDPOINT="${raw}" is not a URL; e.g. http://127.0.0.1:7480`);
  }
}

/**
 * Whether `hostname` (as `URL.hostname` gives it) is this machine's loopback: `localhost`, 127.0.0.0/8 or
 * `[::1]`. Plain http there never leaves the host, so it needs no DB_S3_ALLOW_HTTP.
 */
export function isLoopbackHost(hostname: string): boolean {
  const host = hostname.toLowerCase();
  return host === 'localhost' || host === '[::1]' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(host);
}

function sseMode(raw: string | undefined): Parsed<SseMode | undefined> {
  if (raw === undefined || raw.trim() === '') return ok(undefined);
  const v = raw.trim().toLowerCase();
  if (v === 'aes256') return ok('AES256');
  if (v === 'aws:kms') return ok('aws:kms');
  return bad(`DB_S3_SSE="${raw}" must be AES256 (SSE-S3) or aws:kms (SSE-KMS); leave it unset for the bucket's default encryption`);
}

const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

function setting<K extends keyof Config>(s: Setting<K>): Setting<K> {
  return s;
}

/** Every setting, in the order the docs list them. */
export const SETTINGS = [
  setting({
    field: 'bucket',
    env: 'DB_S3_BUCKET',
    flag: 'bucket',
    description: 'S3 bucket holding the database (versioning on). Required unless DB_SYNC_REPLICA_DIR is set.',
    defaultText: '(required)',
    parse: optionalString,
  }),
  setting({
    field: 'key',
    env: 'DB_S3_KEY',
    flag: 'key',
    description: 'Object key of the latest snapshot; backups go to KEY.backup.YYYYMMDD_HHMMSS.',
    defaultText: DEFAULT_KEY,
    parse: s3Key,
  }),
  setting({
    field: 'localPath',
    env: 'DB_LOCAL_PATH',
    flag: 'local-path',
    description: 'Path of the live SQLite database file.',
    defaultText: DEFAULT_LOCAL_PATH,
    parse: stringWithDefault(DEFAULT_LOCAL_PATH),
  }),
  setting({
    field: 'replicaDir',
    env: 'DB_SYNC_REPLICA_DIR',
    flag: 'replica-dir',
    description: 'Replicate to this local directory instead of S3 (development, demos, mounted volumes).',
    defaultText: '(unset: use S3)',
    parse: optionalString,
  }),
  setting({
    field: 'intervalMs',
    env: 'DB_SYNC_INTERVAL',
    flag: 'interval',
    description: 'How often to snapshot and upload when the database changed: seconds or 30s, 5m, 1h.',
    defaultText: '5m',
    parse: duration('DB_SYNC_INTERVAL', DEFAULT_INTERVAL_MS, MIN_INTERVAL_MS),
  }),
  setting({
    field: 'continuous',
    env: 'DB_SYNC_CONTINUOUS',
    flag: 'continuous',
    description:
      'run, exec: continuous replication of WAL databases (commits shipped about every second, restored as base + segments): auto (on for WAL databases) or off (interval snapshots only).',
    defaultText: 'auto',
    parse: oneOf<ContinuousMode>('DB_SYNC_CONTINUOUS', ['auto', 'off'], 'auto'),
  }),
  setting({
    field: 'segmentIntervalMs',
    env: 'DB_SYNC_SEGMENT_INTERVAL',
    flag: 'segment-interval',
    description: 'Continuous replication: longest a captured commit waits before its segment is sealed and shipped.',
    defaultText: '1s',
    parse: duration('DB_SYNC_SEGMENT_INTERVAL', DEFAULT_SEGMENT_INTERVAL_MS, MIN_SEGMENT_INTERVAL_MS),
  }),
  setting({
    field: 'baseIntervalMs',
    env: 'DB_SYNC_BASE_INTERVAL',
    flag: 'base-interval',
    description: 'Continuous replication: a new base (full copy) after this long when segments were shipped since the last one.',
    defaultText: '1h',
    parse: duration('DB_SYNC_BASE_INTERVAL', DEFAULT_BASE_INTERVAL_MS, MIN_INTERVAL_MS),
  }),
  setting({
    field: 'spoolMaxBytes',
    env: 'DB_SYNC_SPOOL_MAX',
    flag: 'spool-max',
    description:
      'Continuous replication: local spool cap while the store is unreachable (e.g. 512MiB); over it the spool is dropped and a new generation starts when the store is back.',
    defaultText: '25% of the database, at least 64MiB',
    parse: optionalSize('DB_SYNC_SPOOL_MAX', MIN_EXPLICIT_SPOOL_MAX_BYTES),
  }),
  setting({
    field: 'healthPort',
    env: 'DB_SYNC_HEALTH_PORT',
    flag: 'health-port',
    description: 'Port of the health server (/healthz, /readyz); 0 disables it.',
    defaultText: String(DEFAULT_HEALTH_PORT),
    parse: port('DB_SYNC_HEALTH_PORT', DEFAULT_HEALTH_PORT),
  }),
  setting({
    field: 'healthHost',
    env: 'DB_SYNC_HEALTH_HOST',
    flag: 'health-host',
    description: 'Address the health server binds to; 0.0.0.0 to reach it from other containers.',
    defaultText: DEFAULT_HEALTH_HOST,
    parse: stringWithDefault(DEFAULT_HEALTH_HOST),
  }),
  setting({
    field: 'shutdownTimeoutMs',
    env: 'DB_SYNC_SHUTDOWN_TIMEOUT',
    flag: 'shutdown-timeout',
    description: 'Deadline for the final snapshot and upload after SIGTERM; keep it below the ECS stopTimeout.',
    defaultText: '20s',
    parse: duration('DB_SYNC_SHUTDOWN_TIMEOUT', DEFAULT_SHUTDOWN_TIMEOUT_MS, 1_000),
  }),
  setting({
    field: 'restoreTimeoutMs',
    env: 'DB_SYNC_RESTORE_TIMEOUT',
    flag: 'restore-timeout',
    description:
      'run, exec, startup: give up (exit 1, never ready) when the store stays unreachable this long at start; 0 keeps trying, so the app never starts on an empty database.',
    defaultText: '0 (keep trying)',
    parse: duration('DB_SYNC_RESTORE_TIMEOUT', 0, 1_000, 'keep trying'),
  }),
  setting({
    field: 'childStopTimeoutMs',
    env: 'DB_SYNC_CHILD_STOP_TIMEOUT',
    flag: 'child-stop-timeout',
    description:
      'exec: how long the app may take to exit after the forwarded SIGTERM/SIGINT before it gets SIGKILL; the final sync then has its own DB_SYNC_SHUTDOWN_TIMEOUT.',
    defaultText: '10s',
    parse: duration('DB_SYNC_CHILD_STOP_TIMEOUT', DEFAULT_CHILD_STOP_TIMEOUT_MS, 1_000),
  }),
  setting({
    field: 'endpoint',
    env: 'DB_S3_ENDPOINT',
    flag: 'endpoint',
    description: 'Custom S3 endpoint URL (MinIO, R2, Ceph RGW, LocalStack).',
    defaultText: '(AWS)',
    parse: endpointUrl,
  }),
  setting({
    field: 'forcePathStyle',
    env: 'DB_S3_FORCE_PATH_STYLE',
    flag: 'force-path-style',
    boolean: true,
    description: 'Use path-style URLs (http://host/bucket/key); most S3-compatible servers need it.',
    defaultText: 'false',
    parse: booleanValue('DB_S3_FORCE_PATH_STYLE'),
  }),
  setting({
    field: 'region',
    env: 'DB_S3_REGION',
    envFallbacks: ['AWS_REGION', 'AWS_DEFAULT_REGION'],
    flag: 'region',
    description: 'S3 region; falls back to AWS_REGION.',
    defaultText: '(AWS_REGION, else us-east-1)',
    parse: optionalString,
  }),
  setting({
    field: 'allowHttp',
    env: 'DB_S3_ALLOW_HTTP',
    flag: 'allow-http',
    boolean: true,
    description:
      'Allow a plain http:// DB_S3_ENDPOINT on a host other than loopback (a trusted development network); without it only https:// and loopback http:// are accepted.',
    defaultText: 'false',
    parse: booleanValue('DB_S3_ALLOW_HTTP'),
  }),
  setting({
    field: 'sse',
    env: 'DB_S3_SSE',
    flag: 'sse',
    description:
      "Server-side encryption for every object db-sync writes: AES256 (SSE-S3) or aws:kms (SSE-KMS). Unset: the bucket's default.",
    defaultText: '(bucket default)',
    parse: sseMode,
  }),
  setting({
    field: 'sseKmsKeyId',
    env: 'DB_S3_SSE_KMS_KEY_ID',
    flag: 'sse-kms-key-id',
    description: "KMS key (id, ARN or alias) for DB_S3_SSE=aws:kms. Unset: the account's AWS-managed key for S3.",
    defaultText: '(aws/s3)',
    parse: optionalString,
  }),
  setting({
    field: 'integrityCheck',
    env: 'DB_SYNC_INTEGRITY_CHECK',
    flag: 'integrity-check',
    description: 'Check run on every snapshot and restore: quick (PRAGMA quick_check), full (integrity_check) or none.',
    defaultText: 'quick',
    parse: oneOf<IntegrityCheck>('DB_SYNC_INTEGRITY_CHECK', ['quick', 'full', 'none'], 'quick'),
  }),
  setting({
    field: 'onUnknownHistory',
    env: 'DB_SYNC_ON_UNKNOWN_HISTORY',
    flag: 'on-unknown-history',
    description:
      'run, exec, startup: a local database with no sync history (no DB_LOCAL_PATH.db-sync.json) while KEY exists: remote restores KEY and keeps the local file as DB_LOCAL_PATH.backup; local keeps the local file and uploads it over KEY.',
    defaultText: 'remote',
    parse: oneOf<OnUnknownHistory>('DB_SYNC_ON_UNKNOWN_HISTORY', ['remote', 'local'], 'remote'),
  }),
  setting({
    field: 'downloadConcurrency',
    env: 'DB_SYNC_DOWNLOAD_CONCURRENCY',
    flag: 'download-concurrency',
    description: 'Ranged GETs in flight when downloading a snapshot from S3 (restore, download, start).',
    defaultText: String(DEFAULT_DOWNLOAD_CONCURRENCY),
    parse: positiveCount('DB_SYNC_DOWNLOAD_CONCURRENCY', DEFAULT_DOWNLOAD_CONCURRENCY, 64),
  }),
  setting({
    field: 'snapshotPace',
    env: 'DB_SYNC_SNAPSHOT_PACE',
    flag: 'snapshot-pace',
    description:
      "run, exec: share of the time a snapshot (or continuous replication's base) taken while the app runs may work, so the app's commits do not slow down: 25% (or 0.25) means it sleeps three times as long as it works; 100% = as fast as it can. One-shot commands and the final sync are never paced.",
    defaultText: `${DEFAULT_SNAPSHOT_PACE * 100}%`,
    parse: share('DB_SYNC_SNAPSHOT_PACE', DEFAULT_SNAPSHOT_PACE),
  }),
  setting({
    field: 'keepBackups',
    env: 'DB_SYNC_KEEP_BACKUPS',
    flag: 'keep-backups',
    description: 'Retention: always keep the newest N timestamped backups.',
    defaultText: String(DEFAULT_KEEP_BACKUPS),
    parse: count('DB_SYNC_KEEP_BACKUPS', DEFAULT_KEEP_BACKUPS),
  }),
  setting({
    field: 'keepBackupsDays',
    env: 'DB_SYNC_KEEP_BACKUPS_DAYS',
    flag: 'keep-backups-days',
    description: 'Retention: always keep backups younger than N days; older ones beyond the newest N are deleted.',
    defaultText: String(DEFAULT_KEEP_BACKUPS_DAYS),
    parse: count('DB_SYNC_KEEP_BACKUPS_DAYS', DEFAULT_KEEP_BACKUPS_DAYS),
  }),
  setting({
    field: 'leaseMode',
    env: 'DB_SYNC_LEASE',
    flag: 'lease',
    description:
      'One writer at a time (run, exec): auto (enforce where the store enforces conditional writes, else warn), required (refuse to start without) or off.',
    defaultText: 'auto',
    parse: oneOf<LeaseMode>('DB_SYNC_LEASE', ['auto', 'required', 'off'], 'auto'),
  }),
  setting({
    field: 'leaseBucket',
    env: 'DB_SYNC_LEASE_BUCKET',
    flag: 'lease-bucket',
    description: 'Bucket of the lease object, e.g. an unversioned one where the provider ignores conditional writes in versioned buckets.',
    defaultText: '(DB_S3_BUCKET)',
    parse: optionalString,
  }),
  setting({
    field: 'leaseKey',
    env: 'DB_SYNC_LEASE_KEY',
    flag: 'lease-key',
    description: 'Key of the lease object.',
    defaultText: 'KEY.lease',
    parse: optionalString,
  }),
  setting({
    field: 'leaseTtlMs',
    env: 'DB_SYNC_LEASE_TTL',
    flag: 'lease-ttl',
    description: 'A lease not renewed for this long is taken over by a waiting successor; renewed every third of it.',
    defaultText: '30s',
    parse: duration('DB_SYNC_LEASE_TTL', DEFAULT_LEASE_TTL_MS, MIN_LEASE_TTL_MS),
  }),
  setting({
    field: 'leaseWaitWarnMs',
    env: 'DB_SYNC_LEASE_WAIT_WARN',
    flag: 'lease-wait-warn',
    description:
      "Waiting this long for another task's lease logs LEASE WAIT STALLED (a rolling deploy that starts the new task before stopping the old one); match the health check start period.",
    defaultText: '60s',
    parse: duration('DB_SYNC_LEASE_WAIT_WARN', DEFAULT_LEASE_WAIT_WARN_MS, 1_000),
  }),
  setting({
    field: 'versioningCheck',
    env: 'DB_SYNC_VERSIONING_CHECK',
    flag: 'versioning-check',
    description: 'run, exec: check at start that the bucket is versioned: warn (log a warning), required (refuse to start, exit 2) or off.',
    defaultText: 'warn',
    parse: oneOf<VersioningCheck>('DB_SYNC_VERSIONING_CHECK', ['warn', 'required', 'off'], 'warn'),
  }),
  setting({
    field: 'cloudwatchMetrics',
    env: 'DB_SYNC_CLOUDWATCH_METRICS',
    flag: 'cloudwatch-metrics',
    boolean: true,
    description:
      'run, exec: write the key metrics as CloudWatch Embedded Metric Format lines to stdout (every 60 s and after each upload or failure); awslogs turns them into metrics.',
    defaultText: 'false',
    parse: booleanValue('DB_SYNC_CLOUDWATCH_METRICS'),
  }),
  setting({
    field: 'cloudwatchNamespace',
    env: 'DB_SYNC_CLOUDWATCH_NAMESPACE',
    flag: 'cloudwatch-namespace',
    description: 'CloudWatch namespace of those metrics.',
    defaultText: DEFAULT_CLOUDWATCH_NAMESPACE,
    parse: stringWithDefault(DEFAULT_CLOUDWATCH_NAMESPACE),
  }),
  setting({
    field: 'logLevel',
    env: 'LOG_LEVEL',
    flag: 'log-level',
    description: 'trace, debug, info, warn, error, fatal or silent.',
    defaultText: 'info',
    parse: oneOf<LogLevel>('LOG_LEVEL', LOG_LEVELS, 'info'),
  }),
] as const satisfies readonly Setting[];

/** Names of every environment variable db-sync reads (for docs and deployment checks). */
export const ENV_VARS: readonly string[] = (SETTINGS as readonly Setting[]).flatMap((s) => [s.env, ...(s.envFallbacks ?? [])]);

/** Flag values as strings (booleans as "true"), keyed by flag name without dashes. */
export type FlagValues = Readonly<Record<string, string | boolean | undefined>>;

export interface LoadConfigOptions {
  /** Whether this command needs a replica (bucket or directory). `health` does not. */
  readonly needsReplica?: boolean;
}

/**
 * Build the configuration from env and flags.
 * @throws DbSyncError (kind `Usage`) listing every problem found, one per line.
 */
export function loadConfig(env: Env, flags: FlagValues = {}, options: LoadConfigOptions = {}): Config {
  const problems: string[] = [];
  const values: Record<string, unknown> = {};
  for (const s of SETTINGS as readonly Setting[]) {
    const flag = flags[s.flag];
    let raw: string | undefined;
    if (flag !== undefined) raw = typeof flag === 'boolean' ? String(flag) : flag;
    else raw = [s.env, ...(s.envFallbacks ?? [])].map((name) => env[name]).find((v) => v !== undefined && v !== '');
    const parsed = s.parse(raw);
    if (parsed.ok) values[s.field] = parsed.value;
    else problems.push(flag !== undefined ? `${parsed.problem} (from --${s.flag})` : parsed.problem);
  }
  const config = values as unknown as Config;
  if ((options.needsReplica ?? true) && problems.length === 0 && !config.bucket && !config.replicaDir) {
    problems.push('DB_S3_BUCKET is not set; set it to the bucket that holds the database (or --bucket NAME)');
  }
  if (config.bucket && config.replicaDir) {
    problems.push('DB_S3_BUCKET and DB_SYNC_REPLICA_DIR are both set; choose one replica');
  }
  if (config.leaseBucket && config.replicaDir) {
    problems.push('DB_SYNC_LEASE_BUCKET is set with DB_SYNC_REPLICA_DIR; a directory replica keeps its lease in the directory');
  }
  if (config.leaseKey !== undefined && config.leaseKey === config.key && (!config.leaseBucket || config.leaseBucket === config.bucket)) {
    problems.push(`DB_SYNC_LEASE_KEY="${config.leaseKey}" is the database's own key; the lease would overwrite the database`);
  }
  problems.push(...transportAndEncryptionProblems(config));
  if (problems.length > 0) {
    throw new DbSyncError('Usage', `invalid configuration:\n  - ${problems.join('\n  - ')}`, {
      hint: 'fix the settings above (see `db-sync --help` or the README) and run again; nothing was changed',
    });
  }
  return Object.freeze(config);
}

/** Cross-setting checks for the endpoint's transport and server-side encryption (only once each setting parsed). */
function transportAndEncryptionProblems(config: Partial<Config>): string[] {
  const problems: string[] = [];
  if (config.endpoint && !config.allowHttp) {
    const url = new URL(config.endpoint);
    if (url.protocol === 'http:' && !isLoopbackHost(url.hostname)) {
      problems.push(
        `DB_S3_ENDPOINT="${config.endpoint}" is plain http to another host: the data and the session token would cross the network ` +
          'unencrypted; use https://, or set DB_S3_ALLOW_HTTP=true on a trusted development network',
      );
    }
  }
  if (config.sseKmsKeyId && config.sse !== 'aws:kms') {
    problems.push(`DB_S3_SSE_KMS_KEY_ID is set but DB_S3_SSE is ${config.sse ?? 'unset'}; a KMS key applies only with DB_S3_SSE=aws:kms`);
  }
  if (config.sse && config.replicaDir) {
    problems.push('DB_S3_SSE is set with DB_SYNC_REPLICA_DIR; server-side encryption applies only to S3 (encrypt the volume instead)');
  }
  return problems;
}

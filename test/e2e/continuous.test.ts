/**
 * Continuous replication end to end (docs/continuous-replication.md): the built CLI (`db-sync run`) against
 * the real S3 server, an app in a separate process committing sequential ids in WAL mode, then a crash
 * (SIGKILL of both), an S3 outage, a SIGTERM, a successor. Every restore is `db-sync download` into a
 * fresh path, checked with the sqlite3 CLI: the rows are exactly 1..n (a gap-free prefix of the app's
 * commits) and n covers every commit the app had acknowledged about two seconds before the kill.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { freePort, runCli, startCli, waitFor, type Running } from '../helpers/cli.js';
import { createDatabase, integrity, sqlite3, tempDir } from '../helpers/db.js';
import { startFaultProxy } from '../helpers/fault-proxy.js';
import { awsCli, createBucket, s3Env, s3Info } from '../helpers/s3.js';
import { healthJson, keys, logged, logLines } from '../faults/support.js';
import { onLines } from '../helpers/writer.js';

vi.setConfig({ testTimeout: 180_000 });

const driver = createRequire(import.meta.url).resolve('better-sqlite3');

/**
 * The app: commits one row per transaction (ids 1, 2, 3 …) every `pauseMs`, printing "committed N" after
 * each commit returns; with `truncateEvery`, runs `PRAGMA wal_checkpoint(TRUNCATE)` after that many commits.
 */
const APP = `
const Database = require(${JSON.stringify(driver)});
const [path, pauseMs, bodyBytes, truncateEvery] = process.argv.slice(1);
const db = new Database(path, { timeout: 10000 });
db.pragma('journal_mode = WAL');
db.exec('CREATE TABLE IF NOT EXISTS rows (id INTEGER PRIMARY KEY, body TEXT NOT NULL)');
const insert = db.prepare('INSERT INTO rows (id, body) VALUES (?, ?)');
let committed = Number(db.prepare('SELECT coalesce(max(id), 0) AS n FROM rows').get().n);
let stopping = false;
process.on('SIGTERM', () => { stopping = true; });
function body() { let s = ''; while (s.length < Number(bodyBytes)) s += Math.random().toString(36).slice(2); return s.slice(0, Number(bodyBytes)); }
function step() {
  if (stopping) { db.close(); process.stdout.write('stopped ' + committed + '\\n'); process.exit(0); }
  insert.run(committed + 1, body());
  committed += 1;
  process.stdout.write('committed ' + committed + '\\n');
  if (Number(truncateEvery) > 0 && committed % Number(truncateEvery) === 0) {
    const r = db.pragma('wal_checkpoint(TRUNCATE)')[0];
    process.stdout.write('checkpoint ' + r.busy + '\\n');
  }
  setTimeout(step, Number(pauseMs));
}
step();
`;

interface App {
  readonly child: ChildProcess;
  committed(): number;
  /** Lines "checkpoint B" seen: TRUNCATE checkpoints that completed (busy = 0) and that did not. */
  checkpoints(): { done: number; busy: number };
  stop(): Promise<number>;
  exited: Promise<void>;
}

function startApp(dbPath: string, options: { pauseMs?: number; bodyBytes?: number; truncateEvery?: number } = {}): App {
  const child = spawn(
    process.execPath,
    ['-e', APP, dbPath, String(options.pauseMs ?? 3), String(options.bodyBytes ?? 100), String(options.truncateEvery ?? 0)],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  );
  let committed = 0;
  const checkpoints = { done: 0, busy: 0 };
  onLines(child.stdout, (line) => {
    const [what, n] = line.split(' ');
    if (what === 'committed' || what === 'stopped') committed = Math.max(committed, Number(n));
    if (what === 'checkpoint') checkpoints[n === '0' ? 'done' : 'busy'] += 1;
  });
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  onTestFinished(() => {
    if (child.exitCode === null) child.kill('SIGKILL');
  });
  return {
    child,
    committed: () => committed,
    checkpoints: () => ({ ...checkpoints }),
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return committed;
    },
    exited,
  };
}

interface Setup {
  readonly bucket: string;
  readonly dbPath: string;
  readonly port: number;
  /** Env of the daemon (store, endpoint, local path). */
  readonly env: Record<string, string>;
}

/** A fresh bucket, an empty WAL database, and the daemon's env; `extra` on top. */
async function setup(
  extra: Record<string, string> = {},
  options: { wal?: boolean; rows?: number; bodyBytes?: number } = {},
): Promise<Setup> {
  const { bucket } = await createBucket();
  const dbPath = join(tempDir(), 'app.sqlite3');
  createDatabase(dbPath, options.rows ?? 0, { wal: options.wal ?? true, bodyBytes: options.bodyBytes });
  const port = await freePort();
  return {
    bucket,
    dbPath,
    port,
    env: {
      ...s3Env(bucket),
      DB_LOCAL_PATH: dbPath,
      DB_SYNC_INTERVAL: '1h',
      DB_SYNC_HEALTH_PORT: String(port),
      DB_SYNC_LEASE: 'off',
      ...extra,
    },
  };
}

function startDaemon(env: Record<string, string>): Running {
  const daemon = startCli(['run'], env);
  onTestFinished(() => {
    if (daemon.child.exitCode === null) daemon.child.kill('SIGKILL');
  });
  return daemon;
}

/** Log lines of uploaded bases (snapshots carrying a chain position). */
function bases(daemon: Running): Array<Record<string, unknown>> {
  return logLines(daemon, 'snapshot uploaded').filter((l) => typeof l['chain-gen'] === 'string');
}

async function readyWithBase(daemon: Running): Promise<void> {
  await waitFor('ready', () => logged(daemon, 'ready; syncing') || daemon.child.exitCode !== null, 60_000);
  expect(daemon.child.exitCode, daemon.stderr()).toBeNull();
  await waitFor('the first base', () => bases(daemon).length >= 1, 60_000);
}

/** The ids of a database as the sqlite3 CLI sees them: count, smallest, largest. */
function ids(path: string): { count: number; min: number; max: number } {
  const [count, min, max] = sqlite3(path, 'SELECT count(*), coalesce(min(id), 0), coalesce(max(id), 0) FROM rows').split('|').map(Number);
  return { count: count!, min: min!, max: max! };
}

/** `db-sync download` into a fresh path; the rows there must be exactly 1..n. */
async function downloadPrefix(env: Record<string, string>): Promise<{ n: number; chain: Record<string, unknown> | undefined }> {
  const path = join(tempDir(), 'downloaded.sqlite3');
  const r = await runCli(['download', '--json'], { ...s3Env(env.DB_S3_BUCKET!), DB_S3_ENDPOINT: s3Info().endpoint, DB_LOCAL_PATH: path });
  expect(r.code, r.stderr).toBe(0);
  expect(integrity(path)).toBe('ok');
  const { count, min, max } = ids(path);
  expect(count, 'rows must be 1..n with no gap').toBe(max);
  if (count > 0) expect(min).toBe(1);
  const json = JSON.parse(r.stdout.trim().split('\n').at(-1)!) as { chain?: Record<string, unknown> };
  return { n: count, chain: json.chain };
}

/** Let the app write for `writeMs`, note what it had acknowledged, wait 2 s more, then SIGKILL the daemon and the app together. */
async function crashAfter(app: App, daemon: Running, writeMs: number): Promise<{ acknowledged: number; final: number }> {
  await sleep(writeMs);
  const acknowledged = app.committed();
  await sleep(2_000);
  daemon.child.kill('SIGKILL');
  app.child.kill('SIGKILL');
  await Promise.all([daemon.exited, app.exited]);
  return { acknowledged, final: app.committed() };
}

describe('continuous replication (db-sync run, real S3)', () => {
  it('kill -9 of db-sync and the app together: the download is a gap-free prefix with every commit acknowledged 2 s before', async () => {
    const { bucket: leaseBucket } = await createBucket({ versioned: false });
    // The lease on: segments are fenced by its local validity.
    // Large enough (about 5 MB) that the segments of a few seconds stay under half of it: no base meanwhile.
    const s = await setup({ DB_SYNC_LEASE: 'required', DB_SYNC_LEASE_BUCKET: leaseBucket }, { rows: 20_000, bodyBytes: 200 });
    const daemon = startDaemon(s.env);
    await readyWithBase(daemon);
    const app = startApp(s.dbPath);
    const { acknowledged, final } = await crashAfter(app, daemon, 4_000);
    expect(acknowledged).toBeGreaterThan(200);
    const { n, chain } = await downloadPrefix(s.env);
    expect(n).toBeGreaterThanOrEqual(acknowledged);
    // At most the row whose commit returned just before the kill but whose line was not read yet.
    expect(n).toBeLessThanOrEqual(final + 1);
    expect(chain).toMatchObject({ fromSeq: 0, notApplied: 0 });
    expect(chain?.stoppedBecause).toBeUndefined();
    expect(Number(chain?.segments)).toBeGreaterThan(0);
    // Segments are objects under KEY.db-sync/<gen>/.
    expect((await keys(s.bucket)).some((k) => k.startsWith('db.sqlite3.db-sync/'))).toBe(true);
  });

  it('the app’s TRUNCATE checkpoints keep the chain (or start a new generation, logged); the restore is still a correct prefix', async () => {
    const s = await setup();
    const daemon = startDaemon(s.env);
    await readyWithBase(daemon);
    const app = startApp(s.dbPath, { truncateEvery: 100 });
    await sleep(3_000);
    const status = await healthJson(s.port, '/status');
    const replication = status.body.replication as { generations: number; state: string };
    const { acknowledged } = await crashAfter(app, daemon, 1_000);
    expect(app.checkpoints().done, 'some TRUNCATE checkpoint must have completed').toBeGreaterThan(0);
    expect(replication.state).toBe('running');
    const breaks = logLines(daemon, /continuity broken/).length;
    expect(replication.generations - 1).toBeLessThanOrEqual(breaks);
    const { n } = await downloadPrefix(s.env);
    expect(n).toBeGreaterThanOrEqual(acknowledged);
  });

  it('S3 unreachable past DB_SYNC_SPOOL_MAX: the spool is dropped, a new generation starts (logged) when S3 is back, and the restore is correct', async () => {
    const proxy = await startFaultProxy(s3Info().endpoint);
    onTestFinished(() => proxy.close());
    const s = await setup({ DB_S3_ENDPOINT: proxy.url, DB_SYNC_SPOOL_MAX: '1MiB' });
    const daemon = startDaemon(s.env);
    await readyWithBase(daemon);
    const firstGen = bases(daemon)[0]!['chain-gen'];
    proxy.set({ kind: 'internal-error' });
    const app = startApp(s.dbPath, { bodyBytes: 3000 });
    await waitFor('the spool cap', () => logged(daemon, /continuity broken \(the spool holds/), 60_000);
    proxy.pass();
    await waitFor('a base of a new generation', () => bases(daemon).some((b) => b['chain-gen'] !== firstGen), 60_000);
    const { acknowledged } = await crashAfter(app, daemon, 2_000);
    const { n, chain } = await downloadPrefix(s.env);
    expect(chain?.gen).not.toBe(firstGen);
    expect(n).toBeGreaterThanOrEqual(acknowledged);
  });

  it('idle: no request reaches S3, and no segment is written', async () => {
    const proxy = await startFaultProxy(s3Info().endpoint);
    onTestFinished(() => proxy.close());
    const s = await setup({ DB_S3_ENDPOINT: proxy.url }, { rows: 20 });
    const daemon = startDaemon(s.env);
    await readyWithBase(daemon);
    const app = startApp(s.dbPath);
    await sleep(1_500);
    await app.stop();
    const shipped = async (): Promise<boolean> => {
      // A base the segments triggered (they outgrow half of this small database) also sends its requests.
      const r = (await healthJson(s.port, '/status')).body.replication as {
        lagMs: number;
        baseInProgress: boolean;
        shipping: { queued: number };
      };
      return r.lagMs === 0 && r.shipping.queued === 0 && !r.baseInProgress;
    };
    await waitFor('everything shipped', shipped);
    // The app's last commits may not have been read yet (a tick, 200 ms) and are sealed a segment interval
    // (1 s) later: past both, everything is shipped for good. Then the window starts with the mark, before
    // the listing, so a late PUT is counted rather than missed by the listing (seen once under load).
    await sleep(1_500);
    await waitFor('everything shipped', shipped);
    const mark = proxy.mark();
    const segmentsBefore = (await keys(s.bucket)).filter((k) => k.includes('.db-sync/')).length;
    await sleep(3_000);
    expect(proxy.count(undefined, mark)).toBe(0);
    expect((await keys(s.bucket)).filter((k) => k.includes('.db-sync/')).length).toBe(segmentsBefore);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });

  it('SIGTERM while the app writes: the last commits, a final base and the backup key; exit 0; the download holds every commit before it', async () => {
    const s = await setup({}, { rows: 5 });
    const daemon = startDaemon(s.env);
    await readyWithBase(daemon);
    // Another reader comes and goes (a person with sqlite3): it must not find db-sync's locks gone and
    // delete the -wal and -shm (a plain open/close of the database by db-sync once released them).
    expect(sqlite3(s.dbPath, 'SELECT count(*) FROM rows')).toBe('5');
    const app = startApp(s.dbPath);
    await sleep(2_000);
    // SIGTERM while the app still writes: the final base is taken at an exact position regardless.
    const before = app.committed();
    daemon.child.kill('SIGTERM');
    const exited = daemon.exited;
    const committed = await app.stop();
    expect(await exited, daemon.stderr()).toBe(0);
    expect(logged(daemon, 'final sync complete')).toBe(true);
    expect(bases(daemon).length).toBeGreaterThanOrEqual(2);
    const all = await keys(s.bucket);
    expect(all.some((k) => k.startsWith('db.sqlite3.backup.'))).toBe(true);
    const head = JSON.parse(await awsCli(s.bucket, ['s3api', 'head-object', '--bucket', s.bucket, '--key', 'db.sqlite3'])) as {
      Metadata: Record<string, string>;
    };
    expect(head.Metadata['chain-gen']).toMatch(/^\d{8}T\d{6}Z-[0-9a-f]{8}$/);
    const { n } = await downloadPrefix(s.env);
    expect(n).toBeGreaterThanOrEqual(before);
    expect(n).toBeLessThanOrEqual(committed);
  });

  it('a successor after a SIGKILLed holder restores the holder’s base and segments', async () => {
    const { bucket: leaseBucket } = await createBucket({ versioned: false });
    const s = await setup(
      { DB_SYNC_LEASE: 'required', DB_SYNC_LEASE_BUCKET: leaseBucket, DB_SYNC_LEASE_TTL: '3s' },
      { rows: 20_000, bodyBytes: 200 },
    );
    const holder = startDaemon(s.env);
    await readyWithBase(holder);
    const app = startApp(s.dbPath);
    const { acknowledged } = await crashAfter(app, holder, 3_000);
    // The successor runs on a fresh volume: everything it has comes from the store.
    const successorPath = join(tempDir(), 'app.sqlite3');
    const successor = startDaemon({ ...s.env, DB_LOCAL_PATH: successorPath, DB_SYNC_HEALTH_PORT: String(await freePort()) });
    await waitFor('the successor ready', () => logged(successor, 'ready; syncing') || successor.child.exitCode !== null, 90_000);
    const restored = logLines(successor, 'database restored')[0] as { chain?: { segments: number } } | undefined;
    expect(restored?.chain?.segments).toBeGreaterThan(0);
    const { count, max } = ids(successorPath);
    expect(count).toBe(max);
    expect(count).toBeGreaterThanOrEqual(acknowledged);
    successor.child.kill('SIGTERM');
    expect(await successor.exited).toBe(0);
  });

  it('a rollback-journal database logs the WAL hint once and keeps its interval snapshots', async () => {
    const s = await setup({ DB_SYNC_INTERVAL: '1s' }, { wal: false, rows: 10 });
    const daemon = startDaemon(s.env);
    await waitFor('ready', () => logged(daemon, 'ready; syncing'), 60_000);
    sqlite3(s.dbPath, "INSERT INTO rows (body) VALUES ('a')");
    await waitFor('a snapshot', () => logged(daemon, 'snapshot uploaded'));
    sqlite3(s.dbPath, "INSERT INTO rows (body) VALUES ('b')");
    await waitFor('a second snapshot', () => logLines(daemon, 'snapshot uploaded').length >= 2);
    const hints = logLines(daemon, /continuous replication is off for this database/);
    expect(hints).toHaveLength(1);
    expect(String(hints[0]!.msg)).toContain('PRAGMA journal_mode=wal');
    expect(bases(daemon)).toHaveLength(0);
    expect((await keys(s.bucket)).some((k) => k.includes('.db-sync/'))).toBe(false);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });

  it('DB_SYNC_CONTINUOUS=off: a WAL database is snapshotted every interval as before, no segment, no base', async () => {
    const s = await setup({ DB_SYNC_INTERVAL: '1s', DB_SYNC_CONTINUOUS: 'off' }, { rows: 10 });
    const daemon = startDaemon(s.env);
    await waitFor('ready', () => logged(daemon, 'ready; syncing'), 60_000);
    sqlite3(s.dbPath, "INSERT INTO rows (body) VALUES ('a')");
    await waitFor('a snapshot', () => logged(daemon, 'snapshot uploaded'));
    expect(bases(daemon)).toHaveLength(0);
    expect(logged(daemon, /continuous replication/)).toBe(false);
    expect((await keys(s.bucket)).some((k) => k.includes('.db-sync/'))).toBe(false);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
  });
});

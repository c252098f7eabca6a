/**
 * Issue 12, "no silent data loss", the restore side: every way a start, a restore or a one-shot command
 * used to replace good data with worse data without saying so. The built CLI runs against the real S3
 * server (through the fault proxy where S3 must misbehave); results are checked with the AWS CLI and
 * the sqlite3 CLI. Tests that need root (a tmpfs, another user) skip themselves without it.
 */
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import {
  chmodSync,
  chownSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, vi, type TestContext } from 'vitest';
import { CLI, runCli, startCli, waitFor, type Running } from '../helpers/cli.js';
import { createDatabase, integrity, rowCount, sqlite3, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, s3Env } from '../helpers/s3.js';
import { daemonEnv, keys, logged, logLines, proxyForFile, remoteCopy, sha256File } from '../faults/support.js';

// Several of these run the CLI three or four times in a row against the shared S3 server.
vi.setConfig({ testTimeout: 180_000 });

const NOBODY = 65534;
const isRoot = process.getuid?.() === 0;

/** Upload a `rows`-row database (rows of `bodyBytes`) through db-sync itself, so it carries metadata. */
async function uploadRows(env: Record<string, string>, rows: number, bodyBytes = 64): Promise<void> {
  const path = join(tempDir(), 'source.sqlite3');
  createDatabase(path, rows, { bodyBytes });
  const r = await runCli(['upload'], { ...env, DB_LOCAL_PATH: path });
  expect(r.code, r.stderr).toBe(0);
}

/** Version ids of KEY, newest first (the AWS CLI's view). */
async function versionsOfKey(bucket: string): Promise<string[]> {
  const out = JSON.parse(await awsCli(bucket, ['s3api', 'list-object-versions', '--bucket', bucket, '--prefix', 'db.sqlite3'])) as {
    Versions?: Array<{ Key: string; VersionId: string }>;
  };
  return (out.Versions ?? []).filter((v) => v.Key === 'db.sqlite3').map((v) => v.VersionId);
}

/** Start `run`, wait until it is ready or has exited; SIGTERM it when ready. Returns its exit code. */
async function runUntilReady(
  env: Record<string, string>,
  onReady?: (d: Running) => Promise<void> | void,
): Promise<{ code: number; daemon: Running }> {
  const daemon = startCli(['run'], { DB_SYNC_INTERVAL: '1h', DB_SYNC_HEALTH_PORT: '0', ...env });
  await waitFor('ready or exit', () => logged(daemon, 'ready; syncing') || daemon.child.exitCode !== null, 60_000);
  if (daemon.child.exitCode === null) {
    await onReady?.(daemon);
    daemon.child.kill('SIGTERM');
  }
  return { code: await daemon.exited, daemon };
}

/** Mount a tmpfs of `sizeBytes` (unmounted when the test ends); skips the test without root. */
function tmpfs(ctx: TestContext, sizeBytes: number): string {
  if (!isRoot) ctx.skip('mounting a tmpfs needs root');
  const dir = mkdtempSync(join(tmpdir(), 'db-sync-tmpfs-'));
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir]);
  ctx.onTestFinished(() => {
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

/** Run the built CLI as `nobody` (uid/gid 65534, no supplementary groups). */
function runAsNobody(args: readonly string[], env: Record<string, string>): { code: number; stdout: string; stderr: string } {
  try {
    const stdout = execFileSync(
      'setpriv',
      ['--reuid', String(NOBODY), '--regid', String(NOBODY), '--clear-groups', process.execPath, CLI, ...args],
      // A command that wrongly goes ready would serve until stopped: stop it (SIGTERM) after a while.
      {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/tmp', ...env },
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'pipe'],
        timeout: 20_000,
        killSignal: 'SIGTERM',
      },
    );
    return { code: 0, stdout, stderr: '' };
  } catch (error) {
    const e = error as { status: number | null; stdout: string; stderr: string };
    return { code: e.status ?? 1, stdout: e.stdout, stderr: e.stderr };
  }
}

/** A directory every user can reach (mkdtemp makes 0700 ones). */
function openDir(): string {
  const dir = tempDir();
  chmodSync(dir, 0o755);
  return dir;
}

describe('unknown history: the remote copy wins (issue 12.1)', () => {
  it('a dev database baked into the image is set aside as .backup, the remote copy restored, and nothing local uploaded', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 500);
    const db = join(tempDir(), 'db.sqlite3');
    createDatabase(db, 3); // no db.sqlite3.db-sync.json: unknown history
    const { code, daemon } = await runUntilReady({ ...env, DB_LOCAL_PATH: db });
    expect(code, daemon.stderr()).toBe(0);
    expect(rowCount(db)).toBe(500);
    expect(rowCount(`${db}.backup`)).toBe(3);
    const notice = logLines(daemon, /no sync history/)[0];
    expect(notice?.backupPath).toBe(`${db}.backup`);
    expect(notice?.localSizeBytes).toBe(statSync(`${db}.backup`).size);
    expect(notice?.remoteSizeBytes).toBe(statSync(db).size);
    // The only version of KEY is still production's: the dev database never reached it.
    expect(await versionsOfKey(bucket)).toHaveLength(1);
    expect((await remoteCopy(bucket, tempDir())).rows).toBe(500);
  });

  it('a 0-byte file at DB_LOCAL_PATH does not replace production', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 500);
    const db = join(tempDir(), 'db.sqlite3');
    writeFileSync(db, '');
    const { code, daemon } = await runUntilReady({ ...env, DB_LOCAL_PATH: db });
    expect(code, daemon.stderr()).toBe(0);
    expect(rowCount(db)).toBe(500);
    expect(sqlite3(`${db}.backup`, 'SELECT count(*) FROM sqlite_schema')).toBe('0'); // the empty file, kept
    expect(await versionsOfKey(bucket)).toHaveLength(1);
  });

  it('DB_SYNC_ON_UNKNOWN_HISTORY=local keeps the local file and uploads it (the explicit opt-in)', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 500);
    const db = join(tempDir(), 'db.sqlite3');
    createDatabase(db, 3);
    const { code } = await runUntilReady({ ...env, DB_LOCAL_PATH: db, DB_SYNC_ON_UNKNOWN_HISTORY: 'local' });
    expect(code).toBe(0);
    expect(rowCount(db)).toBe(3);
    expect((await remoteCopy(bucket, tempDir())).rows).toBe(3);
  });
});

describe('a local failure is not a corrupt remote (issue 12.2)', () => {
  it('no room for the -shm while checking the download (SQLITE_IOERR_SHMSIZE): exit 7, no fallback, nothing uploaded', async (ctx) => {
    const volume = tmpfs(ctx, 232 * 1024);
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 5, 1_000); // 16 KiB
    await uploadRows(env, 55, 1_000); // 64 KiB: the current object
    // Room for the 64 KiB download, not for the 32 KiB -shm the read-only check of a WAL database needs.
    writeFileSync(join(volume, 'filler'), Buffer.alloc(152 * 1024));
    const db = join(volume, 'db.sqlite3');
    // `full`: the check runs whatever the metadata says (with `quick`, a copy whose sha256 proves it is the
    // checked snapshot is not re-checked, and no -shm is needed at all).
    const { code, daemon } = await runUntilReady({ ...env, DB_LOCAL_PATH: db, DB_SYNC_INTEGRITY_CHECK: 'full' });
    expect(code, daemon.stdout()).toBe(7);
    expect(daemon.stderr()).toMatch(/SQLITE_IOERR_SHMSIZE/);
    expect(daemon.stderr()).toContain(volume);
    expect(logged(daemon, 'skipping a copy that failed verification')).toBe(false);
    expect(existsSync(db)).toBe(false);
    expect(await versionsOfKey(bucket)).toHaveLength(2);
    expect((await remoteCopy(bucket, tempDir())).rows).toBe(55);
  });

  it('a current object that arrived intact (sha256 matched) but is not SQLite is skipped, yet never replaced automatically', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 30);
    const garbage = join(tempDir(), 'garbage.bin');
    writeFileSync(garbage, randomBytes(32 * 1024));
    await awsCli(bucket, [
      's3api',
      'put-object',
      '--bucket',
      bucket,
      '--key',
      'db.sqlite3',
      '--body',
      garbage,
      '--metadata',
      `sha256=${sha256File(garbage)}`,
    ]);
    const db = join(tempDir(), 'db.sqlite3');
    const { code, daemon } = await runUntilReady({ ...env, DB_LOCAL_PATH: db });
    expect(code, daemon.stderr()).toBe(0);
    expect(rowCount(db)).toBe(30);
    expect(logged(daemon, /not replaced automatically/)).toBe(true);
    // KEY still holds what someone put there on purpose: two versions, the newest the intact one.
    expect(await versionsOfKey(bucket)).toHaveLength(2);
    const current = join(tempDir(), 'current.bin');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/db.sqlite3`, current]);
    expect(sha256File(current)).toBe(sha256File(garbage));
  });
});

describe('a reset in the middle of the start-up download (issue 12.7)', () => {
  it('is retried like any transient S3 error, and the start completes with every row', async () => {
    const { bucket } = await createBucket();
    await uploadRows(s3Env(bucket), 2_000, 1_000); // ~2 MB
    const proxy = await proxyForFile();
    proxy.set({ kind: 'reset-mid-body', afterBytes: 256 * 1024 }, { match: (r) => r.op === 'GetObject', times: 1 });
    const db = join(tempDir(), 'db.sqlite3');
    const { code, daemon } = await runUntilReady(daemonEnv(bucket, proxy.url, db, { DB_SYNC_INTERVAL: '1h' }));
    expect(code, daemon.stderr()).toBe(0);
    expect(proxy.count((r) => r.fault === 'reset-mid-body')).toBe(1);
    expect(logged(daemon, /retrying/)).toBe(true);
    expect(rowCount(db)).toBe(2_000);
    expect(integrity(db)).toBe('ok');
  });
});

describe('one-shot commands record sync history (issue 12.13)', () => {
  it('startup, a write, shutdown, another writer uploads, startup again: takes the newer remote copy, no false conflict', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 10);
    const db = join(tempDir(), 'db.sqlite3');
    const local = { ...env, DB_LOCAL_PATH: db };
    expect((await runCli(['startup'], local)).code).toBe(0);
    execFileSync('sqlite3', [db, "INSERT INTO rows (body) VALUES ('app write')"]);
    expect((await runCli(['shutdown'], local)).code).toBe(0);
    await uploadRows(env, 99); // another writer
    const again = await runCli(['startup'], local);
    expect(again.code, again.stderr).toBe(0);
    expect(rowCount(db)).toBe(99);
    expect(rowCount(`${db}.backup`)).toBe(11);
  });

  it('download, upload and restore --force record it too: a local write made after them is kept at the next start, not set aside', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 10);
    const db = join(tempDir(), 'db.sqlite3');
    const local = { ...env, DB_LOCAL_PATH: db };
    const writeThenStart = async (expectedRows: number): Promise<void> => {
      execFileSync('sqlite3', [db, "INSERT INTO rows (body) VALUES ('manual write')"]);
      const start = await runCli(['startup'], local);
      expect(start.code, start.stderr).toBe(0);
      expect(start.stdout).toContain('never reached the store'); // local-ahead: kept, not replaced
      expect(rowCount(db)).toBe(expectedRows);
      expect(existsSync(`${db}.backup`)).toBe(false);
    };
    expect((await runCli(['download'], local)).code).toBe(0);
    await writeThenStart(11);
    expect((await runCli(['upload'], local)).code).toBe(0);
    await writeThenStart(12);
    rmSync(db);
    const restored = await runCli(['restore', '--force'], local); // the 11 rows uploaded above
    expect(restored.code, restored.stderr).toBe(0);
    expect(rowCount(db)).toBe(11);
    await writeThenStart(12);
  });
});

describe('never ready on a directory db-sync cannot write (issue 12.4)', () => {
  it('as nobody over a root-owned 0755 directory: exit 7 naming the directory, owner, mode, uid and the fix; never ready', async (ctx) => {
    if (!isRoot) ctx.skip('needs root to run as another user');
    const { bucket } = await createBucket();
    const volume = join(openDir(), 'data');
    mkdirSync(volume, { mode: 0o755 }); // what an ECS bind mount looks like: root 0755
    const r = runAsNobody(['run'], { ...s3Env(bucket), DB_LOCAL_PATH: join(volume, 'app.sqlite3'), DB_SYNC_HEALTH_PORT: '0' });
    expect(r.code, r.stdout).toBe(7);
    expect(r.stdout).not.toContain('ready; syncing');
    expect(r.stderr).toContain(volume);
    expect(r.stderr).toMatch(/owned by uid 0 gid 0, mode 0755/);
    expect(r.stderr).toMatch(/db-sync runs as uid 65534/);
    expect(r.stderr).toMatch(/VOLUME/);
    expect(readdirSync(volume)).toEqual([]);
  });
});

describe('a restore keeps the owner of the file it replaces (issue 12.6)', () => {
  it('as nobody over a file owned by another user: refuses with exit 7 and leaves the file as it was', async (ctx) => {
    if (!isRoot) ctx.skip('needs root to run as another user');
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 20);
    const dir = openDir();
    chmodSync(dir, 0o777); // both users may write here (a shared named volume)
    const db = join(dir, 'db.sqlite3');
    createDatabase(db, 4, { wal: false });
    chownSync(db, 999, 999);
    chmodSync(db, 0o644);
    const before = readFileSync(db);
    const r = runAsNobody(['download', '--force'], { ...env, DB_LOCAL_PATH: db });
    expect(r.code, r.stderr).toBe(7);
    expect(r.stderr).toMatch(/owned by uid 999/);
    const after = statSync(db);
    expect([after.uid, after.gid, after.mode & 0o777]).toEqual([999, 999, 0o644]);
    expect(readFileSync(db).equals(before)).toBe(true);
  });
});

describe('one conflict object per conflict (issue 12.9)', () => {
  it('restarting in the same conflict uploads the conflict copy once', async () => {
    const { bucket } = await createBucket();
    const db = join(tempDir(), 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    createDatabase(db, 10);
    expect((await runUntilReady(env)).code).toBe(0);
    await uploadRows(s3Env(bucket), 99);
    execFileSync('sqlite3', [db, "INSERT INTO rows (body) VALUES ('local write')"]);
    expect((await runUntilReady(env)).code).toBe(5);
    await new Promise((r) => setTimeout(r, 1_100)); // a new second: a new conflict key name if one were made
    expect((await runUntilReady(env)).code).toBe(5);
    const conflicts = (await keys(bucket)).filter((k) => k.startsWith('db.sqlite3.conflict.'));
    expect(conflicts).toHaveLength(1);
  });
});

describe('minor restore items', () => {
  it('verify writes its scratch copy beside DB_LOCAL_PATH, not to an unwritable TMPDIR, and leaves nothing', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 7);
    const dir = tempDir();
    const r = await runCli(['verify'], { ...env, DB_LOCAL_PATH: join(dir, 'db.sqlite3'), TMPDIR: join(dir, 'no-such-dir') });
    expect(r.code, r.stderr).toBe(0);
    expect(readdirSync(dir)).toEqual([]);
  });

  it('a KEY whose current version is a delete marker still restores the newest version, with a warning', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 6);
    await awsCli(bucket, ['s3api', 'delete-object', '--bucket', bucket, '--key', 'db.sqlite3']);
    const target = join(tempDir(), 'restored.sqlite3');
    const r = await runCli(['restore', '--to', target], env);
    expect(r.code, r.stderr).toBe(0);
    expect(rowCount(target)).toBe(6);
    const warning = r.stdout.split('\n').find((l) => l.includes('delete marker'));
    expect(warning).toMatch(/"level":"warn"/);
  });

  it('a previous file SQLite cannot copy is kept byte for byte with its -wal (.backup-wal), never losing the WAL', async () => {
    const { bucket } = await createBucket();
    const env = s3Env(bucket);
    await uploadRows(env, 8);
    const db = join(tempDir(), 'db.sqlite3');
    writeFileSync(db, randomBytes(8192)); // the backup API cannot read it
    const wal = randomBytes(4096);
    writeFileSync(`${db}-wal`, wal);
    const before = readFileSync(db);
    const r = await runCli(['download', '--force'], { ...env, DB_LOCAL_PATH: db });
    expect(r.code, r.stderr).toBe(0);
    expect(rowCount(db)).toBe(8);
    expect(readFileSync(`${db}.backup`).equals(before)).toBe(true);
    expect(readFileSync(`${db}.backup-wal`).equals(wal)).toBe(true);
  });
});

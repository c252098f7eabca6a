/**
 * Faults on the local side: a full disk and a read-only directory during a snapshot (a small tmpfs,
 * mounted for the test), a file that is not SQLite at the database path, a database locked by the app,
 * rollback-journal mode, and a missing directory. The live database is checked with the sqlite3 CLI, S3
 * with the AWS CLI.
 */
import { spawn } from 'node:child_process';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, statfsSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it, type TestContext } from 'vitest';
import { freePort, httpStatus, runCli, startCli, waitFor } from '../helpers/cli.js';
import { addRows, createDatabase, integrity, rowCount, tempDir } from '../helpers/db.js';
import { createBucket, s3Info, seededBucket } from '../helpers/s3.js';
import { bucketAndDatabase, daemonEnv, keys, logged, logLines, remoteCopy, tempFiles } from './support.js';

/** Mount a tmpfs of `sizeBytes` on a new directory (unmounted when the test ends); skips the test when it cannot. */
function tmpfs(ctx: TestContext, sizeBytes: number): string {
  const dir = mkdtempSync(join(tmpdir(), 'db-sync-tmpfs-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeBytes}`, 'tmpfs', dir], { stdio: 'pipe' });
  } catch (error) {
    rmSync(dir, { recursive: true, force: true });
    const reason = `cannot mount a tmpfs (needs root): ${String((error as { stderr?: Buffer }).stderr ?? error).trim()}`;
    console.log(`[faults] skipped "${ctx.task.name}": ${reason}`);
    ctx.skip(reason);
  }
  ctx.onTestFinished(() => {
    execFileSync('umount', ['-l', dir]);
    rmSync(dir, { recursive: true, force: true });
  });
  return dir;
}

function remount(dir: string, mode: 'ro' | 'rw'): void {
  execFileSync('mount', ['-o', `remount,${mode}`, dir]);
}

const env = (bucket: string, dbPath: string, extra: Record<string, string> = {}) => daemonEnv(bucket, s3Info().endpoint, dbPath, extra);

describe('fault: local disk', () => {
  it('disk full during a snapshot: a clear error, the database untouched, no temp file left, uploads resume once space returns', async (ctx) => {
    const dir = tmpfs(ctx, 4 * 1024 * 1024);
    const { bucket } = await createBucket();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 1_000, { bodyBytes: 1_000 }); // ~1 MB: a snapshot needs that much free space
    // The interval loop's snapshot (continuous replication would ship the 5 rows as a small segment).
    const daemon = startCli(['run'], { ...env(bucket, dbPath), DB_SYNC_CONTINUOUS: 'off' });
    await waitFor('the first upload', () => logged(daemon, 'snapshot uploaded'));

    const fs = statfsSync(dir);
    const filler = join(dir, 'filler');
    writeFileSync(filler, Buffer.alloc(fs.bavail * fs.bsize - 200_000));
    addRows(dbPath, 5); // fits in the space left; the snapshot does not
    await waitFor('a failed snapshot', () => logged(daemon, 'sync failed; will retry'));
    const failure = logLines(daemon, 'sync failed; will retry')[0];
    expect(JSON.stringify(failure?.err)).toContain('SQLITE_FULL');
    expect(String(failure?.hint)).toMatch(/disk is full/);
    expect(tempFiles(dir)).toEqual([]);
    expect(integrity(dbPath)).toBe('ok');
    expect(rowCount(dbPath)).toBe(1_005);
    expect(daemon.child.exitCode).toBeNull();

    rmSync(filler);
    await waitFor('recovery once space returns', () => logged(daemon, 'sync recovered'));
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);
    expect((await remoteCopy(bucket, tempDir())).rows).toBe(1_005);
    expect(tempFiles(dir)).toEqual([]);
  });

  it('read-only directory during a snapshot: exit 7 with the fix, database intact, nothing uploaded; works once writable', async (ctx) => {
    const dir = tmpfs(ctx, 8 * 1024 * 1024);
    const { bucket } = await createBucket();
    const dbPath = join(dir, 'db.sqlite3');
    createDatabase(dbPath, 13, { wal: false });
    // A read-only remount needs no file open for writing: so a one-shot upload, not the daemon.
    remount(dir, 'ro');
    try {
      const result = await runCli(['upload'], env(bucket, dbPath));
      expect(result.code).toBe(7);
      expect(result.stderr).toMatch(/EROFS|SQLITE_CANTOPEN|SQLITE_READONLY/);
      expect(result.stderr).toContain(
        "hint: db-sync writes each snapshot to a temp file beside the database: make DB_LOCAL_PATH's directory writable",
      );
      expect(integrity(dbPath)).toBe('ok');
      expect(await keys(bucket)).toEqual([]);
    } finally {
      remount(dir, 'rw');
    }
    expect(tempFiles(dir)).toEqual([]);
    const upload = await runCli(['upload'], env(bucket, dbPath));
    expect(upload.code).toBe(0);
    expect((await remoteCopy(bucket, tempDir())).rows).toBe(13);
  });
});

describe('fault: what is at the database path', () => {
  it('a file that is not SQLite: run refuses to start (exit 7), never ready, the file untouched, nothing uploaded', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const dbPath = join(dir, 'db.sqlite3');
    const junk = Buffer.from('this is a text file, not a database. '.repeat(100));
    writeFileSync(dbPath, junk);
    const result = await runCli(['run'], env(bucket, dbPath));
    expect(result.code).toBe(7);
    expect(result.stderr).toContain('SQLITE_NOTADB');
    expect(result.stderr).toContain('hint: the file is not a SQLite database; check DB_LOCAL_PATH');
    expect(result.stdout).not.toContain('"ready; syncing"');
    expect(readFileSync(dbPath).equals(junk)).toBe(true);
    expect(tempFiles(dir)).toEqual([]);
    expect(await keys(bucket)).toEqual([]);
  });

  it('a missing directory: created on restore (as `aws s3 cp` did); a file in the way is a clear exit 7', async () => {
    const { bucket, dir } = await seededBucket(12);

    const dbPath = join(dir, 'fresh', 'volume', 'db.sqlite3');
    const port = await freePort();
    const daemon = startCli(['run'], env(bucket, dbPath, { DB_SYNC_HEALTH_PORT: String(port) }));
    await waitFor('readiness', async () => (await httpStatus(port, '/readyz')) === 200);
    expect(logged(daemon, 'created the database directory (it did not exist)')).toBe(true);
    expect(rowCount(dbPath)).toBe(12);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);

    writeFileSync(join(dir, 'file'), 'in the way');
    const blocked = await runCli(['run'], env(bucket, join(dir, 'file', 'db.sqlite3')));
    expect(blocked.code).toBe(7);
    expect(blocked.stderr).toMatch(/database directory .*file: ENOTDIR/);
    expect(blocked.stderr).toContain('hint: a part of DB_LOCAL_PATH is a file, not a directory');
    expect((await remoteCopy(bucket, dir)).rows).toBe(12);

    // The manual commands create a missing directory too, and refuse a file in the way the same way.
    const manual = join(dir, 'manual', 'db.sqlite3');
    const downloaded = await runCli(['download'], env(bucket, manual));
    expect(downloaded.code).toBe(0);
    expect(rowCount(manual)).toBe(12);
    const restored = await runCli(['restore', '--to', join(dir, 'drill', 'copy.sqlite3')], env(bucket, dbPath));
    expect(restored.code).toBe(0);
    expect(rowCount(join(dir, 'drill', 'copy.sqlite3'))).toBe(12);
    const refused = await runCli(['download'], env(bucket, join(dir, 'file', 'db.sqlite3')));
    expect(refused.code).toBe(7);
    expect(refused.stderr).toContain('hint: a part of DB_LOCAL_PATH is a file, not a directory');
  });
});

/** Another process (the app) holding an exclusive lock on `dbPath` with `rows` uncommitted rows for `holdMs`. */
function holdExclusiveLock(dbPath: string, rows: number, holdMs: number): { locked: Promise<void>; done: Promise<void> } {
  const driver = createRequire(import.meta.url).resolve('better-sqlite3');
  const source = `
    const Database = require(${JSON.stringify(driver)});
    const db = new Database(process.argv[1]);
    db.exec('BEGIN EXCLUSIVE');
    const insert = db.prepare('INSERT INTO rows (body) VALUES (?)');
    for (let i = 0; i < Number(process.argv[2]); i++) insert.run('locked ' + i);
    process.stdout.write('locked\\n');
    setTimeout(() => { db.exec('COMMIT'); db.close(); }, Number(process.argv[3]));
  `;
  const child = spawn(process.execPath, ['-e', source, dbPath, String(rows), String(holdMs)], { stdio: ['ignore', 'pipe', 'inherit'] });
  const locked = new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
  const done = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  return { locked, done };
}

describe('fault: locks and journal modes', () => {
  it('rollback-journal mode works and warns once; a lock held by the app delays a snapshot without failing it', async () => {
    const { bucket, dir, dbPath } = await bucketAndDatabase(10, { wal: false });
    const daemon = startCli(['run'], env(bucket, dbPath));
    await waitFor('the journal-mode warning', () => logged(daemon, /^the database is in rollback-journal mode/));
    expect(logged(daemon, 'snapshot uploaded')).toBe(true);
    const warning = logLines(daemon, /^the database is in rollback-journal mode/);
    expect(warning).toHaveLength(1);
    expect(warning[0]?.journalMode).toBe('delete');

    // Held across several ticks (1 s): each snapshot waits on the lock (busy timeout) instead of failing.
    const lock = holdExclusiveLock(dbPath, 7, 3_000);
    await lock.locked;
    await lock.done;
    await waitFor('the locked rows uploaded', () => logLines(daemon, 'snapshot uploaded').length >= 2);
    daemon.child.kill('SIGTERM');
    expect(await daemon.exited).toBe(0);

    expect(logged(daemon, 'sync failed; will retry')).toBe(false);
    expect(logLines(daemon, /^the database is in rollback-journal mode/)).toHaveLength(1);
    expect(rowCount(dbPath)).toBe(17);
    const remote = await remoteCopy(bucket, dir);
    expect(remote.rows).toBe(17);
    expect(remote.integrity).toBe('ok');
  });

  it(
    'a database locked for longer than the busy timeout: upload exits 7 saying it is locked, nothing uploaded',
    { timeout: 90_000 },
    async () => {
      const { bucket, dir, dbPath } = await bucketAndDatabase(4, { wal: false });
      const lock = holdExclusiveLock(dbPath, 1, 40_000);
      await lock.locked;
      const result = await runCli(['upload'], env(bucket, dbPath));
      expect(result.code).toBe(7);
      expect(result.stderr).toContain('SQLITE_BUSY');
      expect(result.stderr).toMatch(/hint: the database stayed locked for 30s/);
      expect(await keys(bucket)).toEqual([]);
      expect(tempFiles(dir)).toEqual([]);
      await lock.done;
      expect(rowCount(dbPath)).toBe(5);
      expect(integrity(dbPath)).toBe('ok');
      expect(existsSync(`${dbPath}-journal`)).toBe(false);
    },
  );
});

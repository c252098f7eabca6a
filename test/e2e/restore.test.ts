/**
 * Restores you can trust, end to end against the real S3 server: fallback past damaged copies, never
 * overwriting unsynced local data, point-in-time restore, listing, retention and the restore drill.
 * Damaged objects are written with the AWS CLI, results checked with the AWS CLI and sqlite3.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readFileSync, truncateSync, copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startCli, waitFor } from '../helpers/cli.js';
import { addRows, createDatabase, integrity, rowCount, tempDir } from '../helpers/db.js';
import { awsCli, createBucket, s3Env } from '../helpers/s3.js';

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');

/** Upload a good database with `rows` rows through db-sync itself (so it carries metadata). */
async function uploadRows(env: Record<string, string>, dir: string, rows: number): Promise<void> {
  const path = join(dir, `good-${rows}-${randomBytes(3).toString('hex')}.sqlite3`);
  createDatabase(path, rows);
  const r = await runCli(['upload'], { ...env, DB_LOCAL_PATH: path });
  expect(r.code, r.stderr).toBe(0);
}

/** Put raw bytes at KEY with the AWS CLI, optionally claiming a sha256 in metadata. */
async function putRaw(bucket: string, file: string, claimedSha?: string): Promise<void> {
  const args = ['s3api', 'put-object', '--bucket', bucket, '--key', 'db.sqlite3', '--body', file];
  if (claimedSha) args.push('--metadata', `sha256=${claimedSha}`);
  await awsCli(bucket, args);
}

async function keys(bucket: string): Promise<string[]> {
  const out = JSON.parse((await awsCli(bucket, ['s3api', 'list-objects-v2', '--bucket', bucket])) || '{}') as {
    Contents?: Array<{ Key: string }>;
  };
  return (out.Contents ?? []).map((o) => o.Key).sort();
}

describe('verified restore with fallback', () => {
  it('skips a random, a truncated, a wrong-checksum and a non-SQLite newest copy and restores the last good one', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const env = s3Env(bucket);
    await uploadRows(env, dir, 30);

    const random = join(dir, 'random.bin');
    writeFileSync(random, randomBytes(64 * 1024));
    await putRaw(bucket, random, sha256(random));
    const truncated = join(dir, 'truncated.sqlite3');
    createDatabase(truncated, 2000);
    const fullSha = sha256(truncated);
    truncateSync(truncated, 12_000);
    await putRaw(bucket, truncated, fullSha);
    const wrongSha = join(dir, 'wrongsha.sqlite3');
    createDatabase(wrongSha, 5);
    await putRaw(bucket, wrongSha, 'f'.repeat(64));
    const text = join(dir, 'text.txt');
    writeFileSync(text, 'not a database at all\n'.repeat(100));
    await putRaw(bucket, text);

    const target = join(dir, 'restored.sqlite3');
    const r = await runCli(['restore', '--to', target, '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    expect(rowCount(target)).toBe(30);
    expect(integrity(target)).toBe('ok');
    const logs = r.stdout.split('\n').filter((l) => l.startsWith('{"level"'));
    const skipped = logs.filter((l) => l.includes('skipping a copy that failed verification'));
    expect(skipped).toHaveLength(4);
    expect(skipped.join('\n')).toMatch(/does not match the recorded/);
    expect(skipped.join('\n')).toMatch(/not a healthy SQLite database/);
    expect(logs.some((l) => l.includes('restored an older copy'))).toBe(true);
  });

  it('falls back to the newest timestamped backup when every version is bad', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const env = s3Env(bucket);
    const db = join(dir, 'db.sqlite3');
    createDatabase(db, 11);
    expect((await runCli(['shutdown'], { ...env, DB_LOCAL_PATH: db })).code).toBe(0);
    // Leave only bad versions of KEY: drop the good one, then put garbage on top.
    const versions = JSON.parse(await awsCli(bucket, ['s3api', 'list-object-versions', '--bucket', bucket, '--prefix', 'db.sqlite3'])) as {
      Versions: Array<{ Key: string; VersionId: string }>;
    };
    for (const v of versions.Versions.filter((x) => x.Key === 'db.sqlite3')) {
      await awsCli(bucket, ['s3api', 'delete-object', '--bucket', bucket, '--key', 'db.sqlite3', `--version-id=${v.VersionId}`]);
    }
    const garbage = join(dir, 'garbage');
    writeFileSync(garbage, randomBytes(10_000));
    await putRaw(bucket, garbage);
    const r = await runCli(['restore', '--to', join(dir, 'r1.sqlite3')], env);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/"used":"db\.sqlite3\.backup\.\d{8}_\d{6}"/);
    expect(rowCount(join(dir, 'r1.sqlite3'))).toBe(11);
  });

  it('fails with exit 6 and leaves the target untouched when no copy verifies', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const env = s3Env(bucket);
    const garbage = join(dir, 'garbage');
    writeFileSync(garbage, randomBytes(20_000));
    await putRaw(bucket, garbage);
    await putRaw(bucket, garbage, 'a'.repeat(64));
    const target = join(dir, 'db.sqlite3');
    createDatabase(target, 3);
    const before = readFileSync(target);
    const r = await runCli(['download', '--force'], { ...env, DB_LOCAL_PATH: target });
    expect(r.code).toBe(6);
    expect(r.stderr).toContain('no copy of db.sqlite3 passed verification');
    expect(readFileSync(target).equals(before)).toBe(true);
    expect(existsSync(`${target}.backup`)).toBe(false);
  });

  it('removes stale -wal/-shm files so the restored database is the one in S3', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const env = s3Env(bucket);
    await uploadRows(env, dir, 8);
    // A different database's WAL and SHM left next to the target.
    const target = join(dir, 'db.sqlite3');
    const other = join(dir, 'other.sqlite3');
    createDatabase(other, 500);
    copyFileSync(other, target);
    writeFileSync(`${target}-wal`, randomBytes(32 * 1024));
    writeFileSync(`${target}-shm`, randomBytes(32 * 1024));
    const r = await runCli(['download', '--force'], { ...env, DB_LOCAL_PATH: target });
    expect(r.code, r.stderr).toBe(0);
    expect(existsSync(`${target}-wal`) && readFileSync(`${target}-wal`).length > 0).toBe(false);
    expect(integrity(target)).toBe('ok');
    expect(rowCount(target)).toBe(8);
    expect(rowCount(`${target}.backup`)).toBe(500);
  });
});

describe('never overwrite unsynced local data', () => {
  async function runOnce(env: Record<string, string>, prepare?: () => void): Promise<{ code: number; logs: string }> {
    const daemon = startCli(['run'], { ...env, DB_SYNC_INTERVAL: '1h', DB_SYNC_HEALTH_PORT: '0' });
    await waitFor('ready', () => daemon.logs().some((l) => l.msg === 'ready; syncing') || daemon.child.exitCode !== null);
    prepare?.();
    daemon.child.kill('SIGTERM');
    const code = await daemon.exited;
    return { code, logs: daemon.stdout() };
  }

  it('keeps and uploads a local database that is ahead of the remote copy', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    createDatabase(db, 10);
    expect((await runOnce(env)).code).toBe(0);
    expect(existsSync(`${db}.db-sync.json`)).toBe(true);
    // Changes made while db-sync was not running (e.g. it crashed; the volume survived).
    addRows(db, 5);
    const second = startCli(['run'], { ...env, DB_SYNC_INTERVAL: '1h', DB_SYNC_HEALTH_PORT: '0' });
    await waitFor('the immediate upload', () => second.logs().some((l) => l.msg === 'snapshot uploaded'));
    expect(second.stdout()).toContain('never reached the store');
    second.child.kill('SIGTERM');
    expect(await second.exited).toBe(0);
    expect(rowCount(db)).toBe(15);
    const out = join(dir, 'remote.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/db.sqlite3`, out]);
    expect(rowCount(out)).toBe(15);
  });

  it('restarts cleanly after a SIGKILL on a database restored from an object aws s3 cp uploaded (no sha256)', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    // How users migrate from the old script: the object was uploaded raw, from a live WAL database.
    const legacy = join(dir, 'legacy.sqlite3');
    createDatabase(legacy, 20, { wal: true });
    await awsCli(bucket, ['s3', 'cp', legacy, `s3://${bucket}/db.sqlite3`]);
    const first = startCli(['run'], { ...env, DB_SYNC_INTERVAL: '1h', DB_SYNC_HEALTH_PORT: '0' });
    await waitFor('ready', () => first.logs().some((l) => l.msg === 'ready; syncing') || first.child.exitCode !== null);
    first.child.kill('SIGKILL'); // before any upload: the state file names the restored version
    await first.exited;
    const second = await runOnce(env);
    expect(second.code, second.logs).toBe(0);
    expect(second.logs).not.toContain('CONFLICT');
    expect(rowCount(db)).toBe(20);
  });

  it('takes the remote copy when only the remote moved on, keeping the local file as .backup', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    createDatabase(db, 10);
    expect((await runOnce(env)).code).toBe(0);
    await uploadRows(env, dir, 99); // another task uploaded
    const second = await runOnce(env);
    expect(second.code).toBe(0);
    expect(second.logs).toContain('the remote copy is newer');
    expect(rowCount(db)).toBe(99);
    expect(rowCount(`${db}.backup`)).toBe(10);
  });

  it('refuses to guess when both changed: uploads a conflict key and exits 5', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    createDatabase(db, 10);
    expect((await runOnce(env)).code).toBe(0);
    await uploadRows(env, dir, 99);
    addRows(db, 1);
    const before = readFileSync(db);
    const second = await runOnce(env);
    expect(second.code).toBe(5);
    expect(second.logs).toContain('CONFLICT');
    expect(readFileSync(db).equals(before)).toBe(true);
    const conflicts = (await keys(bucket)).filter((k) => /^db\.sqlite3\.conflict\.\d{8}_\d{6}$/.test(k));
    expect(conflicts).toHaveLength(1);
    const out = join(dir, 'conflict.sqlite3');
    await awsCli(bucket, ['s3', 'cp', `s3://${bucket}/${conflicts[0]}`, out]);
    expect(rowCount(out)).toBe(11);
  });
});

describe('point in time, listing, retention and the drill', () => {
  it('restore --at picks the newest version stored at or before the time', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const env = s3Env(bucket);
    const marks: string[] = [];
    for (const rows of [1, 2, 3]) {
      await uploadRows(env, dir, rows);
      // S3 times have one-second resolution: step past it so each version has its own second.
      await new Promise((r) => setTimeout(r, 1_100));
      marks.push(new Date().toISOString());
      await new Promise((r) => setTimeout(r, 1_100));
    }
    for (const [i, at] of marks.entries()) {
      const target = join(dir, `at-${i}.sqlite3`);
      const r = await runCli(['restore', '--at', at, '--to', target], env);
      expect(r.code, r.stderr).toBe(0);
      expect(rowCount(target)).toBe(i + 1);
    }
    const tooEarly = await runCli(['restore', '--at', '2000-01-01T00:00:00Z', '--to', join(dir, 'none.sqlite3')], env);
    expect(tooEarly.code).toBe(4);
    const bad = await runCli(['restore', '--at', 'yesterday'], env);
    expect(bad.code).toBe(2);
  });

  it('restore writes a new file by default and never the live database without --force', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    await uploadRows(env, dir, 4);
    createDatabase(db, 1);
    const r = await runCli(['restore', '--json'], env);
    expect(r.code, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('{"path"')) ?? '{}') as { path: string };
    expect(result.path).toMatch(/db\.sqlite3\.restored\.\d{8}_\d{6}$/);
    expect(rowCount(result.path)).toBe(4);
    expect(rowCount(db)).toBe(1);
  });

  it('backups lists versions and backups newest first with sha256', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    createDatabase(db, 2);
    expect((await runCli(['upload'], env)).code).toBe(0);
    addRows(db, 1);
    expect((await runCli(['shutdown'], env)).code).toBe(0);
    const r = await runCli(['backups', '--json'], env);
    expect(r.code).toBe(0);
    const list = JSON.parse(r.stdout.split('\n').find((l) => l.startsWith('[')) ?? '[]') as Array<{
      kind: string;
      isLatest: boolean;
      sha256?: string;
      at: string;
    }>;
    expect(list.filter((e) => e.kind === 'version')).toHaveLength(2);
    expect(list.filter((e) => e.kind === 'backup')).toHaveLength(1);
    expect(list.every((e) => /^[0-9a-f]{64}$/.test(e.sha256 ?? ''))).toBe(true);
    const times = list.map((e) => Date.parse(e.at));
    expect([...times].sort((a, b) => b - a)).toEqual(times);
    const table = await runCli(['backups'], env);
    expect(table.stdout).toContain('RESTORE WITH');
  });

  it('retention deletes only backups both older than the age limit and beyond the newest N', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const db = join(dir, 'db.sqlite3');
    const env = { ...s3Env(bucket), DB_LOCAL_PATH: db };
    createDatabase(db, 1);
    const seed = join(dir, 'seed.sqlite3');
    createDatabase(seed, 1);
    const old = ['20200101_000000', '20200102_000000', '20200103_000000', '20200104_000000'];
    for (const stamp of old) await awsCli(bucket, ['s3', 'cp', seed, `s3://${bucket}/db.sqlite3.backup.${stamp}`]);
    const recent = new Date(Date.now() - 86_400_000).toISOString().replace(/[-:]/g, '').replace('T', '_').slice(0, 15);
    await awsCli(bucket, ['s3', 'cp', seed, `s3://${bucket}/db.sqlite3.backup.${recent}`]);
    const r = await runCli(['shutdown'], { ...env, DB_SYNC_KEEP_BACKUPS: '3', DB_SYNC_KEEP_BACKUPS_DAYS: '7' });
    expect(r.code, r.stderr).toBe(0);
    const remaining = (await keys(bucket)).filter((k) => k.includes('.backup.'));
    // Newest 3: today's, yesterday's, 20200104. Older and beyond 3: deleted. Yesterday's is also within 7 days.
    expect(remaining).toHaveLength(3);
    expect(remaining).toContain(`db.sqlite3.backup.${recent}`);
    expect(remaining).toContain('db.sqlite3.backup.20200104_000000');
    expect(remaining).not.toContain('db.sqlite3.backup.20200103_000000');
    expect(await keys(bucket)).toContain('db.sqlite3');
  });

  it('verify passes on a good snapshot and exits 6 on a damaged one', async () => {
    const { bucket } = await createBucket();
    const dir = tempDir();
    const env = s3Env(bucket);
    await uploadRows(env, dir, 3);
    const good = await runCli(['verify'], env);
    expect(good.code, good.stderr).toBe(0);
    expect(good.stdout).toContain('integrity: PRAGMA integrity_check: ok');
    expect(good.stdout).toContain('matches metadata');
    const garbage = join(dir, 'garbage');
    writeFileSync(garbage, randomBytes(4096));
    await putRaw(bucket, garbage, 'b'.repeat(64));
    const bad = await runCli(['verify'], env);
    expect(bad.code).toBe(6);
    expect(bad.stderr).toContain('failed verification');
  });
});

/**
 * End to end: `db-sync exec -- <app>` with the built CLI, a real app process writing rows, the real
 * local S3 server, and results checked with the AWS CLI and the sqlite3 CLI. The app is started by
 * db-sync (its pid is db-sync's business), so everything the tests know about it comes through the
 * stdout and stderr db-sync passes on — which is itself one of the things under test.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli, startCli, waitFor, type Running } from '../helpers/cli.js';
import {
  APP_STDERR_END,
  APP_STDERR_START,
  appSetup,
  checkAppOutput,
  lastCommitted,
  writeChildApp,
  type AppSetup,
} from '../helpers/child-app.js';
import { integrity, rowCount, tempDir } from '../helpers/db.js';
import { awsCli } from '../helpers/s3.js';

const sha256 = (path: string): string => createHash('sha256').update(readFileSync(path)).digest('hex');
const BACKUP_KEY = /^db\.sqlite3\.backup\.\d{8}_\d{6}$/;

function startExec(s: AppSetup, appEnv: Record<string, string> = {}): Running {
  return startCli(['exec', '--', process.execPath, s.app], { ...s.env, ...appEnv });
}

/** Download `key` with the AWS CLI; its row count, after checking it is a sound database. */
async function remoteRows(s: AppSetup, key = 'db.sqlite3'): Promise<number> {
  const out = join(s.dir, `remote-${Math.random().toString(36).slice(2)}.sqlite3`);
  await awsCli(s.bucket, ['s3', 'cp', `s3://${s.bucket}/${key}`, out]);
  expect(integrity(out)).toBe('ok');
  return rowCount(out);
}

async function keys(s: AppSetup): Promise<string[]> {
  const listing = JSON.parse((await awsCli(s.bucket, ['s3api', 'list-objects-v2', '--bucket', s.bucket])) || '{}') as {
    Contents?: Array<{ Key: string }>;
  };
  return (listing.Contents ?? []).map((o) => o.Key);
}

/**
 * The checks every stop shares: the app's output came through whole and in order, the final snapshot
 * in S3 holds every row in the local database (which holds at least every row the app reported), and a
 * timestamped backup of exactly that snapshot was written.
 */
async function expectFinalSync(s: AppSetup, run: Running, seedRows: number): Promise<{ committed: number; tail: string[] }> {
  const output = checkAppOutput(run.stdout(), seedRows);
  const localRows = rowCount(s.dbPath);
  expect(localRows).toBeGreaterThanOrEqual(seedRows + output.committed);
  expect(await remoteRows(s)).toBe(localRows);
  expect(run.logs().some((l) => l.msg === 'final sync complete')).toBe(true);

  const backups = (await keys(s)).filter((k) => BACKUP_KEY.test(k));
  expect(backups).toHaveLength(1);
  const latest = join(s.dir, 'latest.sqlite3');
  const backup = join(s.dir, 'backup.sqlite3');
  await awsCli(s.bucket, ['s3', 'cp', `s3://${s.bucket}/db.sqlite3`, latest]);
  await awsCli(s.bucket, ['s3', 'cp', `s3://${s.bucket}/${backups[0]}`, backup]);
  expect(sha256(backup)).toBe(sha256(latest));
  return output;
}

describe('db-sync exec', () => {
  it('restores before the app starts, syncs while it runs, forwards SIGHUP and SIGTERM, and on exit 0 uploads every row', async () => {
    const s = await appSetup();
    const run = startExec(s);
    await waitFor('the app to commit rows', () => lastCommitted(run.stdout()) >= 20);
    // The database was in place before the app opened it: it saw the 50 restored rows.
    expect(checkAppOutput(run.stdout(), 50).committed).toBeGreaterThanOrEqual(20);
    await waitFor('an upload while the app runs', () => run.logs().some((l) => l.msg === 'snapshot uploaded'));

    run.child.kill('SIGHUP');
    await waitFor('the app to get SIGHUP', () => run.stdout().includes('app: got SIGHUP\n'));
    expect(run.child.exitCode).toBeNull(); // SIGHUP is the app's business, not a stop

    const committedBeforeStop = lastCommitted(run.stdout());
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(0);

    const { committed, tail } = await expectFinalSync(s, run, 50);
    expect(committed).toBeGreaterThanOrEqual(committedBeforeStop);
    expect(tail).toEqual(['app: got SIGHUP', 'app: got SIGTERM', 'app: exit 0']);
    // stderr is the app's alone, byte for byte: db-sync logs to stdout and had nothing to complain about.
    expect(run.stderr()).toBe(APP_STDERR_START + APP_STDERR_END);
    const forwarded = run.logs().filter((l) => l.msg === 'forwarding signal to the app');
    expect(forwarded.map((l) => l.signal)).toEqual(['SIGHUP', 'SIGTERM']);
  });

  it("exits with the app's non-zero exit code after a successful final sync", async () => {
    const s = await appSetup();
    const run = startExec(s, { APP_ON_TERM: 'exit:3' });
    await waitFor('the app to commit rows', () => lastCommitted(run.stdout()) >= 10);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(3);
    const { tail } = await expectFinalSync(s, run, 50);
    expect(tail).toEqual(['app: got SIGTERM', 'app: exit 3']);
  });

  it('exits 128+15 when the app dies by the forwarded SIGTERM, and still syncs', async () => {
    const s = await appSetup();
    const run = startExec(s, { APP_ON_TERM: 'reraise' });
    await waitFor('the app to commit rows', () => lastCommitted(run.stdout()) >= 10);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(143);
    const { tail } = await expectFinalSync(s, run, 50);
    expect(tail).toEqual(['app: got SIGTERM']);
    expect(run.logs().find((l) => l.msg === 'app exited')).toMatchObject({ code: null, signal: 'SIGTERM', exitCode: 143 });
  });

  it('syncs and exits with the code of an app that exits by itself', async () => {
    const s = await appSetup();
    const run = startExec(s, { APP_EXIT_AFTER: '30:5' });
    expect(await run.exited).toBe(5);
    const { committed, tail } = await expectFinalSync(s, run, 50);
    expect(committed).toBe(30);
    expect(tail).toEqual(['app: exit 5']);
    expect(await remoteRows(s)).toBe(80);
    expect(run.logs().find((l) => l.msg === 'app exited')).toMatchObject({ stopRequested: false });
  });

  it('SIGKILLs an app that ignores SIGTERM past DB_SYNC_CHILD_STOP_TIMEOUT, exits 137, and still syncs every row', async () => {
    const s = await appSetup();
    const run = startExec(s, { APP_ON_TERM: 'ignore', DB_SYNC_CHILD_STOP_TIMEOUT: '1s' });
    await waitFor('the app to commit rows', () => lastCommitted(run.stdout()) >= 10);
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(137);
    const { tail } = await expectFinalSync(s, run, 50);
    expect(tail).toEqual(['app: got SIGTERM']);
    // It went on writing after the SIGTERM it ignored; those rows are in the final snapshot too.
    const lines = checkAppOutput(run.stdout(), 50);
    expect(lines.committed).toBeGreaterThan(10);
    expect(run.logs().some((l) => l.msg === 'app did not exit in time after the stop signal; sending SIGKILL')).toBe(true);
    expect(run.logs().find((l) => l.msg === 'app exited')).toMatchObject({ signal: 'SIGKILL', exitCode: 137 });
  });

  it('a second SIGTERM aborts: the app gets it too, db-sync exits 130 without the final sync', async () => {
    const s = await appSetup();
    const run = startExec(s, { APP_ON_TERM: 'ignore-once', DB_SYNC_INTERVAL: '1h' });
    await waitFor('the app to commit rows', () => lastCommitted(run.stdout()) >= 10);
    run.child.kill('SIGTERM');
    await waitFor('the app to get the first SIGTERM', () => run.stdout().includes('app: got SIGTERM\n'));
    run.child.kill('SIGTERM');
    expect(await run.exited).toBe(130);
    expect(checkAppOutput(run.stdout(), 50).tail).toEqual(['app: got SIGTERM', 'app: got SIGTERM', 'app: exit 0']);
    expect(run.logs().some((l) => String(l.msg).startsWith('FINAL SYNC SKIPPED'))).toBe(true);
    // Nothing was uploaded over the restored copy (interval 1 h) and no backup key was written.
    expect(await remoteRows(s)).toBe(50);
    expect((await keys(s)).filter((k) => BACKUP_KEY.test(k))).toEqual([]);
  });

  it('exits 127 for a command that does not exist and 126 for one that cannot run, and writes nothing', async () => {
    const s = await appSetup();
    const missing = await runCli(['exec', '--', join(s.dir, 'no-such-program')], s.env);
    expect(missing.code).toBe(127);
    expect(missing.stderr).toContain('cannot start');
    expect(missing.stderr).toContain('hint:');

    const notExecutable = join(s.dir, 'not-executable.sh');
    writeFileSync(notExecutable, '#!/bin/sh\necho never\n', { mode: 0o644 });
    // Its own database path: a second start on the first one is a different story (reconcile, not exec).
    const cannot = await runCli(['exec', '--', notExecutable], { ...s.env, DB_LOCAL_PATH: join(s.dir, 'second.sqlite3') });
    expect(cannot.code).toBe(126);
    expect(cannot.stderr).toContain('chmod +x');

    // The restore happened (the app would have had its database), but the app never ran: no upload, no backup.
    expect(rowCount(s.dbPath)).toBe(50);
    expect(await keys(s)).toEqual(expect.not.arrayContaining([expect.stringMatching(BACKUP_KEY)]));
    const versions = JSON.parse(
      await awsCli(s.bucket, ['s3api', 'list-object-versions', '--bucket', s.bucket, '--prefix', 'db.sqlite3']),
    ) as {
      Versions: Array<{ Key: string }>;
    };
    expect(versions.Versions.filter((v) => v.Key === 'db.sqlite3')).toHaveLength(1);
  });

  it('stops the app and exits 5 when the lease is lost while it runs (it would write into a database never uploaded again)', async () => {
    const dir = tempDir();
    const env = {
      DB_SYNC_REPLICA_DIR: join(dir, 'replica'),
      DB_LOCAL_PATH: join(dir, 'db.sqlite3'),
      DB_SYNC_HEALTH_PORT: '0',
      DB_SYNC_INTERVAL: '1s',
      DB_SYNC_LEASE: 'required',
      DB_SYNC_LEASE_TTL: '2s',
      APP_PAUSE_MS: '50',
      APP_EXIT_AFTER: '400:0', // left alone, the app would exit 0 by itself after ~20 s
    };
    const run = startCli(['exec', '--', process.execPath, writeChildApp(dir)], env);
    await waitFor('the app committing', () => run.stdout().includes('committed 3'));
    expect((await runCli(['lease', '--force'], env)).code).toBe(0); // another party breaks the lease
    expect(await run.exited).toBe(5);
    expect(run.stdout()).toContain('app: got SIGTERM');
    expect(run.logs().some((l) => String(l.msg).startsWith('LEASE LOST while the app runs: stopping the app'))).toBe(true);
    expect(run.logs().some((l) => String(l.msg).startsWith('FINAL SYNC SKIPPED (lease lost'))).toBe(true);
  });

  it("logs the app's program and argument count, never its arguments (they may hold secrets)", async () => {
    const dir = tempDir();
    const secret = 'pa55-w0rd-in-argv';
    const result = await runCli(['exec', '--', 'sh', '-c', 'exit 0', 'sh', `--password=${secret}`], {
      DB_SYNC_REPLICA_DIR: join(dir, 'replica'),
      DB_LOCAL_PATH: join(dir, 'db.sqlite3'),
      DB_SYNC_HEALTH_PORT: '0',
      LOG_LEVEL: 'trace',
    });
    expect(result.code).toBe(0);
    const started = result.stdout
      .split('\n')
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.msg === 'app started');
    expect(started).toMatchObject({ program: 'sh', argCount: 4 });
    expect(result.stdout + result.stderr).not.toContain(secret);
  });

  it('exits 2 without a command, and touches nothing', async () => {
    const s = await appSetup(0);
    for (const args of [['exec'], ['exec', '--'], ['exec', 'node', 'app.js']]) {
      const result = await runCli(args, s.env);
      expect(result.code, args.join(' ')).toBe(2);
      expect(result.stderr, args.join(' ')).toContain('--');
    }
    expect(existsSync(s.dbPath)).toBe(false);
    expect(await keys(s)).toEqual([]);
  });
});

/**
 * entrypoint.sh, run as an image runs it: by a real shell (bash, and dash as /bin/sh), with `db-sync` on
 * PATH (a shim that execs the built CLI), a real app writing rows, the real local S3 server, and the
 * signal sent where Docker and ECS send it: to the entrypoint's own pid.
 */
import { spawn, execFile } from 'node:child_process';
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { CLI, waitFor } from '../helpers/cli.js';
import { appLines, appSetup, checkAppOutput, lastCommitted, type AppSetup } from '../helpers/child-app.js';
import { integrity, rowCount, tempDir } from '../helpers/db.js';
import { awsCli } from '../helpers/s3.js';

const execFileAsync = promisify(execFile);
const ENTRYPOINT = join(import.meta.dirname, '..', '..', 'entrypoint.sh');
const BACKUP_KEY = /^db\.sqlite3\.backup\.\d{8}_\d{6}$/;

interface Started {
  readonly pid: number;
  kill(signal: NodeJS.Signals): void;
  stdout(): string;
  stderr(): string;
  /** The exit code, 128+N when killed by signal N. */
  readonly exited: Promise<number>;
}

/** A bucket with a 50-row database, a `db-sync` shim on PATH, and the app. */
async function setup(): Promise<AppSetup> {
  const s = await appSetup(50);
  return { ...s, env: { ...s.env, ...shimEnv(s.dir) } };
}

/**
 * PATH with `db-sync` on it, as the image's /usr/local/bin/db-sync: a program of that name that execs
 * the built CLI, so the pid that ran it becomes the CLI's Node process.
 */
function shimEnv(dir: string): Record<string, string> {
  const bin = join(dir, 'bin');
  mkdirSync(bin);
  const shim = join(bin, 'db-sync');
  writeFileSync(shim, `#!/bin/sh\nexec '${process.execPath}' '${CLI}' "$@"\n`);
  chmodSync(shim, 0o755);
  return { PATH: `${bin}:/usr/bin:/bin`, HOME: process.env.HOME ?? '/tmp', LOG_LEVEL: 'info' };
}

function startEntrypoint(shell: string, args: readonly string[], env: Record<string, string>): Started {
  const child = spawn(shell, [ENTRYPOINT, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => (out += c));
  child.stderr.setEncoding('utf8').on('data', (c: string) => (err += c));
  const exited = new Promise<number>((resolve) => {
    child.on('exit', (code, signal) => resolve(code ?? 128 + (signal === 'SIGKILL' ? 9 : 15)));
  });
  if (child.pid === undefined) throw new Error(`cannot start ${shell}`);
  return { pid: child.pid, kill: (signal) => child.kill(signal), stdout: () => out, stderr: () => err, exited };
}

/** What `db-sync startup` and `shutdown` print in legacy mode, between the app's lines. */
const LEGACY_LINES = /^(restored|kept-local|first-start): |^(uploaded|unchanged, not re-uploaded); backup written to /;

function appOutput(stdout: string): string {
  return appLines(stdout)
    .filter((l) => !LEGACY_LINES.test(l))
    .join('\n');
}

/** The final upload holds every row of the local database, and a backup of it was written. */
async function expectFinalUpload(s: AppSetup, stdout: string): Promise<string[]> {
  const { committed, tail } = checkAppOutput(appOutput(stdout), 50);
  expect(committed).toBeGreaterThanOrEqual(10);
  const localRows = rowCount(s.dbPath);
  expect(localRows).toBeGreaterThanOrEqual(50 + committed);
  const remote = join(s.dir, 'remote.sqlite3');
  await awsCli(s.bucket, ['s3', 'cp', `s3://${s.bucket}/db.sqlite3`, remote]);
  expect(integrity(remote)).toBe('ok');
  expect(rowCount(remote)).toBe(localRows);
  const listing = JSON.parse(await awsCli(s.bucket, ['s3api', 'list-objects-v2', '--bucket', s.bucket])) as {
    Contents: Array<{ Key: string }>;
  };
  expect(listing.Contents.map((o) => o.Key).filter((k) => BACKUP_KEY.test(k))).toHaveLength(1);
  return tail;
}

describe('entrypoint.sh, exec mode (default)', () => {
  it.each([
    ['bash', 'exit:3', 3],
    ['sh', 'reraise', 143],
  ])(
    'under %s: the shell becomes db-sync, SIGTERM reaches the app, the final upload has every row, exit = app (%s)',
    async (shell, onTerm, code) => {
      const s = await setup();
      const run = startEntrypoint(shell, [process.execPath, s.app], { ...s.env, APP_ON_TERM: onTerm });
      await waitFor('the app to commit rows', () => lastCommitted(run.stdout()) >= 10);
      // No shell is left between the orchestrator and Node: the pid it signals is db-sync's own.
      const cmdline = readFileSync(`/proc/${run.pid}/cmdline`, 'utf8').split('\0');
      expect(cmdline.slice(0, 3)).toEqual([process.execPath, CLI, 'exec']);
      await waitFor('an upload while the app runs', () => run.stdout().includes('"msg":"snapshot uploaded"'));

      run.kill('SIGTERM');
      expect(await run.exited).toBe(code);
      expect((await expectFinalUpload(s, run.stdout()))[0]).toBe('app: got SIGTERM');
      expect(run.stdout()).toContain('"msg":"forwarding signal to the app"');
    },
  );
});

describe('entrypoint.sh, legacy mode (startup, app, shutdown)', () => {
  it.each([
    ['bash', ['legacy'], {}, 'SIGTERM', 'exit:3', 3],
    ['sh', [], { DB_SYNC_MODE: 'legacy' }, 'SIGTERM', 'reraise', 143],
    // SIGINT reaches the app as SIGTERM: a background job of a script starts with SIGINT ignored.
    ['bash', ['legacy'], {}, 'SIGINT', 'exit:0', 0],
  ] as const)(
    'under %s %j %j: %s → final upload with every row, exit = app (%s)',
    async (shell, modeArgs, modeEnv, signal, onTerm, code) => {
      const s = await setup();
      const run = startEntrypoint(shell, [...modeArgs, process.execPath, s.app], { ...s.env, ...modeEnv, APP_ON_TERM: onTerm });
      await waitFor('the app to commit rows', () => lastCommitted(run.stdout()) >= 10);
      expect(run.stdout()).toMatch(/^restored: /m);
      // The shell stays (it has to run `db-sync shutdown` afterwards) and the app is its child.
      expect(readFileSync(`/proc/${run.pid}/cmdline`, 'utf8')).toContain('entrypoint.sh');

      run.kill(signal);
      expect(await run.exited).toBe(code);
      expect((await expectFinalUpload(s, run.stdout()))[0]).toBe('app: got SIGTERM');
      expect(run.stdout()).toMatch(/^uploaded; backup written to db\.sqlite3\.backup\.\d{8}_\d{6}$/m);
    },
  );

  it('SIGTERM while startup cannot reach S3: startup stops at once, the app never starts, exit 0', async () => {
    const s = await setup();
    // Nothing listens on port 1: startup retries, not ready, for as long as it is let.
    const run = startEntrypoint('bash', ['legacy', process.execPath, s.app], { ...s.env, DB_S3_ENDPOINT: 'http://127.0.0.1:1' });
    await waitFor('startup retrying', () => run.stdout().includes('cannot reach the store to restore'));
    run.kill('SIGTERM');
    // Before: the shell deferred its trap until startup ended, and startup never ended.
    const code = await Promise.race([run.exited, sleep(30_000).then(() => 'still running after 30 s')]);
    if (typeof code === 'string') run.kill('SIGKILL');
    expect(code).toBe(0);
    expect(run.stderr()).toContain('SIGTERM before the app started; not starting it');
    expect(appLines(run.stdout())).toEqual([]);
  });

  it('startup gives up after DB_SYNC_RESTORE_TIMEOUT while S3 is unreachable (exit 1), and the app never starts', async () => {
    const s = await setup();
    const run = startEntrypoint('sh', ['legacy', process.execPath, s.app], {
      ...s.env,
      DB_S3_ENDPOINT: 'http://127.0.0.1:1',
      DB_SYNC_RESTORE_TIMEOUT: '3s',
    });
    const code = await Promise.race([run.exited, sleep(60_000).then(() => 'still running after 60 s')]);
    if (typeof code === 'string') run.kill('SIGKILL');
    expect(code).toBe(1);
    expect(run.stderr()).toMatch(/gave up after 3s \(DB_SYNC_RESTORE_TIMEOUT\)/);
    expect(run.stderr()).toContain('db-sync startup failed (exit 1); not starting the app');
    expect(appLines(run.stdout())).toEqual([]);
  });

  it('does not start the app when startup fails, and exits with its code', async () => {
    const s = await setup();
    const run = startEntrypoint('sh', ['legacy', process.execPath, s.app], { ...s.env, DB_S3_BUCKET: 'no-such-bucket-here' });
    expect(await run.exited).toBe(3);
    expect(run.stderr()).toContain('db-sync startup failed (exit 3); not starting the app');
    expect(appLines(run.stdout())).toEqual([]);
  });
});

describe('entrypoint.sh, usage', () => {
  it('exits 2 without a command or with an unknown mode', async () => {
    const env = shimEnv(tempDir());
    for (const [args, modeEnv] of [
      [[], {}],
      [['legacy'], {}],
      [['true'], { DB_SYNC_MODE: 'sidecar' }],
    ] as const) {
      const run = startEntrypoint('sh', args, { ...env, ...modeEnv });
      expect(await run.exited, JSON.stringify(args)).toBe(2);
      expect(run.stderr()).toMatch(/no command to run|is not a mode/);
    }
  });

  it('is shellcheck clean', async () => {
    // Installed by .ci/run (Debian package shellcheck); a missing shellcheck fails the test, as it should.
    const { stdout } = await execFileAsync('shellcheck', ['--shell=sh', '--severity=style', ENTRYPOINT]);
    expect(stdout).toBe('');
  });
});
